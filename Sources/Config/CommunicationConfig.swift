import Core
import Foundation

/// The `communication:` section: what workers put on the wire. It changes what reaches
/// the optimizer, so it is part of the run (stored in checkpoints, the same for every
/// worker, sent with each step by the coordinator).
public struct CommunicationConfig: Sendable, Equatable, Codable {
    /// Fraction of each tensor's active weights a worker sends per ordinary step, the
    /// largest-magnitude ones, keeping the rest as a residual for later steps (top-k with
    /// error feedback, as Deep Gradient Compression); 1 sends every value as they are.
    public var gradientDensity: Double = 1
    /// Deep Gradient Compression's warm-up: the density falls exponentially from 25% (or
    /// from gradient_density, if higher) to gradient_density over this many epochs.
    public var densityWarmupEpochs: Double = 0

    public init() {}

    /// Whether workers compress at all.
    public var compresses: Bool { gradientDensity < 1 }

    /// The density of step `step` (nil: no compression).
    public func density(step: Int, stepsPerEpoch: Int) -> Double? {
        guard compresses else { return nil }
        let start = max(0.25, gradientDensity)
        let warmup = densityWarmupEpochs * Double(max(1, stepsPerEpoch))
        guard warmup > 0, Double(step) < warmup else { return gradientDensity }
        let t = Double(step) / warmup
        return (start.logarithm * (1 - t) + gradientDensity.logarithm * t).exponential
    }
}

extension Double {
    fileprivate var logarithm: Double { Foundation.log(self) }
    fileprivate var exponential: Double { Foundation.exp(self) }
}

extension CommunicationConfig: ConfigSection {
    public static let sectionName = "communication"
    public static var defaults: CommunicationConfig { CommunicationConfig() }
    public static var keys: [ConfigKey<CommunicationConfig>] {
        [
            .value("gradient_density", \.gradientDensity,
                   check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1] (a fraction of each tensor's active weights; 1 = no compression), got \($0)" }),
            .value("density_warmup_epochs", \.densityWarmupEpochs, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
        ]
    }
}
