import Core
import Foundation

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

}

extension OptimizerConfig: ConfigSection {
    public static let sectionName = "optimizer"
    public static var defaults: OptimizerConfig { OptimizerConfig() }

    public static var keys: [ConfigKey<OptimizerConfig>] {
        [
            ConfigKey("name", read: { m, c in
                guard let name = try m.string("name") else { return }
                guard let k = Kind(rawValue: name.lowercased()) else { throw m.error("name", "unknown optimizer '\(name)'; known: adamw, sgd") }
                c.kind = k
            }, write: { $0.kind.rawValue }),
            .value("lr", \.lr, check: { $0 > 0 ? nil : "must be positive, got \($0)" }),
            .value("weight_decay", \.weightDecay, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            // AdamW's keys are written for AdamW only, SGD's for SGD (both are read).
            ConfigKey("betas", read: { m, c in
                guard let betas = try m.doubles("betas") else { return }
                guard betas.count == 2 else { throw m.error("betas", "expected two numbers [beta1, beta2], found \(betas.count)") }
                guard (0 ..< 1).contains(betas[0]), (0 ..< 1).contains(betas[1]) else {
                    throw m.error("betas", "each must be in [0, 1), got [\(betas[0]), \(betas[1])]")
                }
                c.beta1 = betas[0]; c.beta2 = betas[1]
            }, write: { $0.kind == .adamw ? "[\($0.beta1), \($0.beta2)]" : nil }),
            ConfigKey("eps", read: { m, c in
                guard let v = try m.double("eps") else { return }
                guard v > 0 else { throw m.error("eps", "must be positive, got \(v)") }
                c.eps = v
            }, write: { $0.kind == .adamw ? "\($0.eps)" : nil }),
            ConfigKey("momentum", read: { m, c in
                guard let v = try m.double("momentum") else { return }
                guard (0 ..< 1).contains(v) else { throw m.error("momentum", "must be in [0, 1), got \(v)") }
                c.momentum = v
            }, write: { $0.kind == .sgd ? "\($0.momentum)" : nil }),
            ConfigKey("nesterov", read: { m, c in c.nesterov = try m.bool("nesterov") ?? c.nesterov },
                      write: { $0.kind == .sgd ? "\($0.nesterov)" : nil }),
            .value("clip_grad_norm", \.clipGradNorm, check: { $0 >= 0 ? nil : "must be >= 0 (0 = off), got \($0)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws {
        if nesterov && (kind != .sgd || momentum == 0) { throw m.error("nesterov", "needs name: sgd and a momentum above 0") }
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

}

extension ScheduleConfig: ConfigSection {
    public static let sectionName = "schedule"
    public static var defaults: ScheduleConfig { ScheduleConfig() }

    public static var keys: [ConfigKey<ScheduleConfig>] {
        [
            ConfigKey("name", read: { m, c in
                guard let name = try m.string("name") else { return }
                guard let k = Kind(rawValue: name) else { throw m.error("name", "unknown schedule '\(name)'; known: cosine, constant") }
                c.kind = k
            }, write: { $0.kind.rawValue }),
            // warmup_steps, when set, wins; the effective config writes the one in force.
            ConfigKey("warmup_epochs", read: { m, c in
                guard let v = try m.double("warmup_epochs") else { return }
                guard v >= 0 else { throw m.error("warmup_epochs", "must be >= 0, got \(v)") }
                c.warmupEpochs = v
            }, write: { $0.warmupSteps == nil ? "\($0.warmupEpochs)" : nil }),
            .optional("warmup_steps", \.warmupSteps, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            .value("warmup_lr", \.warmupLR, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            .value("min_lr", \.minLR, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
        ]
    }
}


