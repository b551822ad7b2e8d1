import Config
import Foundation

/// The learning rate of every step of a run.
public struct LRSchedule: Sendable, Equatable {
    public let base: Double
    public let totalSteps: Int
    public let warmupSteps: Int
    public let warmupLR: Double
    public let minLR: Double
    public let kind: ScheduleConfig.Kind

    public init(base: Double, totalSteps: Int, warmupSteps: Int, warmupLR: Double, minLR: Double,
                kind: ScheduleConfig.Kind = .cosine) {
        self.base = base; self.totalSteps = totalSteps; self.warmupSteps = min(warmupSteps, totalSteps)
        self.warmupLR = warmupLR; self.minLR = minLR; self.kind = kind
    }

    public init(_ c: ScheduleConfig, base: Double, totalSteps: Int, stepsPerEpoch: Int) {
        let warm = c.warmupSteps ?? Int((c.warmupEpochs * Double(stepsPerEpoch)).rounded())
        self.init(base: base, totalSteps: totalSteps, warmupSteps: warm, warmupLR: c.warmupLR,
                  minLR: c.minLR, kind: c.kind)
    }

    /// The rate for the update made at 0-based step `step`: warm-up climbs linearly from
    /// warmupLR (step 0) towards base (reached at step warmupSteps); cosine then falls
    /// from base to minLR at the last step.
    public func lr(step: Int) -> Double {
        if step < warmupSteps {
            return warmupLR + (base - warmupLR) * Double(step) / Double(warmupSteps)
        }
        if kind == .constant { return base }
        let span = max(1, totalSteps - 1 - warmupSteps)
        let t = min(1, Double(step - warmupSteps) / Double(span))
        return minLR + 0.5 * (base - minLR) * (1 + cos(Double.pi * t))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
