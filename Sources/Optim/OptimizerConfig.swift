import Model

/// The `optimizer:` section.
public struct OptimizerConfig: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable { case adamw, sgd }

    public var kind: Kind = .adamw
    public var lr: Double = 1e-3
    public var weightDecay: Double = 0.05
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8
    /// SGD only (0 = plain SGD).
    public var momentum: Double = 0.9
    public var nesterov: Bool = false
    /// Clip the global gradient norm to this value (0 = off).
    public var clipGradNorm: Double = 0

    public init() {}

    public static func parse(_ m: ConfigMapping?) throws -> OptimizerConfig {
        var c = OptimizerConfig()
        guard let m else { return c }
        if let name = try m.string("name") {
            guard let k = Kind(rawValue: name.lowercased()) else {
                throw m.error("name", "unknown optimizer '\(name)'; known: adamw, sgd")
            }
            c.kind = k
        }
        c.lr = try m.double("lr") ?? c.lr
        c.weightDecay = try m.double("weight_decay") ?? c.weightDecay
        if let betas = try m.doubles("betas") {
            guard betas.count == 2 else {
                throw m.error("betas", "expected two numbers [beta1, beta2], found \(betas.count)")
            }
            c.beta1 = betas[0]; c.beta2 = betas[1]
        }
        c.eps = try m.double("eps") ?? c.eps
        c.momentum = try m.double("momentum") ?? c.momentum
        c.nesterov = try m.bool("nesterov") ?? c.nesterov
        c.clipGradNorm = try m.double("clip_grad_norm") ?? c.clipGradNorm
        try m.finish()
        guard c.lr > 0 else { throw m.error("lr", "must be positive, got \(c.lr)") }
        guard c.weightDecay >= 0 else { throw m.error("weight_decay", "must be >= 0, got \(c.weightDecay)") }
        guard (0 ..< 1).contains(c.beta1), (0 ..< 1).contains(c.beta2) else {
            throw m.error("betas", "each must be in [0, 1), got [\(c.beta1), \(c.beta2)]")
        }
        guard c.eps > 0 else { throw m.error("eps", "must be positive, got \(c.eps)") }
        guard (0 ..< 1).contains(c.momentum) else { throw m.error("momentum", "must be in [0, 1), got \(c.momentum)") }
        guard c.clipGradNorm >= 0 else { throw m.error("clip_grad_norm", "must be >= 0 (0 = off), got \(c.clipGradNorm)") }
        if c.nesterov && (c.kind != .sgd || c.momentum == 0) {
            throw m.error("nesterov", "needs name: sgd and a momentum above 0")
        }
        return c
    }

    public var yaml: String {
        var s = "optimizer:\n  name: \(kind.rawValue)\n  lr: \(lr)\n  weight_decay: \(weightDecay)\n"
        switch kind {
        case .adamw: s += "  betas: [\(beta1), \(beta2)]\n  eps: \(eps)\n"
        case .sgd: s += "  momentum: \(momentum)\n  nesterov: \(nesterov)\n"
        }
        return s + "  clip_grad_norm: \(clipGradNorm)\n"
    }
}

/// The `schedule:` section: linear warm-up from `warmup_lr` to the optimizer's lr, then
/// cosine decay to `min_lr` at the last step (or a constant lr).
public struct ScheduleConfig: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable { case cosine, constant }
    public var kind: Kind = .cosine
    /// Warm-up length in epochs (may be fractional); `warmupSteps`, when set, wins.
    public var warmupEpochs: Double = 1
    public var warmupSteps: Int? = nil
    public var warmupLR: Double = 1e-6
    public var minLR: Double = 1e-5

    public init() {}

    public static func parse(_ m: ConfigMapping?) throws -> ScheduleConfig {
        var c = ScheduleConfig()
        guard let m else { return c }
        if let name = try m.string("name") {
            guard let k = Kind(rawValue: name) else {
                throw m.error("name", "unknown schedule '\(name)'; known: cosine, constant")
            }
            c.kind = k
        }
        c.warmupEpochs = try m.double("warmup_epochs") ?? c.warmupEpochs
        c.warmupSteps = try m.int("warmup_steps")
        c.warmupLR = try m.double("warmup_lr") ?? c.warmupLR
        c.minLR = try m.double("min_lr") ?? c.minLR
        try m.finish()
        guard c.warmupEpochs >= 0 else { throw m.error("warmup_epochs", "must be >= 0, got \(c.warmupEpochs)") }
        if let s = c.warmupSteps, s < 0 { throw m.error("warmup_steps", "must be >= 0, got \(s)") }
        guard c.warmupLR >= 0 else { throw m.error("warmup_lr", "must be >= 0, got \(c.warmupLR)") }
        guard c.minLR >= 0 else { throw m.error("min_lr", "must be >= 0, got \(c.minLR)") }
        return c
    }

    public var yaml: String {
        var s = "schedule:\n  name: \(kind.rawValue)\n"
        if let w = warmupSteps { s += "  warmup_steps: \(w)\n" } else { s += "  warmup_epochs: \(warmupEpochs)\n" }
        return s + "  warmup_lr: \(warmupLR)\n  min_lr: \(minLR)\n"
    }
}

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
