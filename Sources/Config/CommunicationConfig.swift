import Compression
import Core
import Foundation

/// The `communication:` section: what workers put on the wire. It changes what reaches
/// the optimizer, so it is part of the run (stored in checkpoints, the same for every
/// worker, sent with each step by the coordinator).
public struct CommunicationConfig: Sendable, Equatable, Codable {
    /// Fraction of each tensor's active weights a worker sends per ordinary step, the
    /// largest-magnitude ones, keeping the rest as a residual for later steps (top-k with
    /// error feedback, as Deep Gradient Compression); 1 sends every value as they are.
    /// nil (auto): every value, and the coordinator measures its first steps: where the
    /// wire takes at least `autoBF16Share` of a step every value goes in bf16 both ways from
    /// then on, at least `autoInt8Share` in int8, at least `autoInt4Share` in int4 (int8 and
    /// int4 with each side keeping its rounding for later steps): the narrower the values,
    /// the more top-1 they may cost, so only the wire that needs them gets them
    /// (`WireChoice.swift`). Auto does not take top-k: in the runs against DDP it cost
    /// 1.3-2 pt of top-1, more than int4 (docs/benchmarks.md); a density below 1 asks for it.
    public var gradientDensity: Double? = nil
    /// Deep Gradient Compression's warm-up: the density falls exponentially from 25% (or
    /// from gradient_density, if higher) to gradient_density over this many epochs. One
    /// epoch by default: the first compressed steps come just after the learning rate's
    /// peak, and over five seed pairs of the default run and the reference recipe the
    /// warm-up took the top-1 gap to uncompressed from 0.70 to 0.47 pt on average, for 2-5%
    /// more bytes over the whole run (docs/benchmarks.md).
    public var densityWarmupEpochs: Double = 1
    /// Epochs of uncompressed steps before top-k starts (1-bit Adam's warm-up), nil: auto,
    /// which is `autoDenseWarmupEpochs` or the learning rate's warm-up, the longer, when
    /// AdamW's variance freezes, and 0 otherwise.
    public var denseWarmupEpochs: Double? = nil
    /// Whether AdamW's variance freezes when compression starts (see `Optimizer.freezeVariance`).
    public var freezeVariance: VarianceFreeze = .auto
    /// A frozen variance keeps each tensor's level in step with its gradients: workers send
    /// one mean square per tensor each step and the coordinator scales each tensor's frozen
    /// √v by how far their average has moved since the freeze (`VarianceTracker`).
    public var trackVariance = true
    /// What the coordinator sends each step: the weights, or (auto, when the run compresses)
    /// the update it applied, which workers apply to their replicas.
    public var downlink: Downlink = .auto
    /// With updates on the downlink: the weights' CRC-32 travels every this many steps (and
    /// after each topology update); a worker whose replica differs is sent the whole state.
    public var checksumEverySteps: Int = 50
    /// Tensors of one dimension (biases, LayerNorm) are sent whole, not top-k (DGC's code).
    public var denseVectors = true
    /// Tensors of at most this many weights (active or not) are sent whole (0: none): the class
    /// token, position embedding, patch embedding and head of a small model are a few
    /// percent of its weights, and at one entry in a hundred each would wait a hundred
    /// steps (measured: 2 points of top-1 after one compressed epoch of the default run).
    public var denseBelow = 8192
    /// How much of each of those small tensors (`denseVectors`, `denseBelow`) a worker sends
    /// per step: 1 sends them whole; below 1, the top ⌈d · active⌉ of each with error
    /// feedback, d never below the step's density. They are 2% of the default run's weights
    /// but, whole in int8, about 15 of the 22 KB a worker sends per step at top-k 1%; at
    /// 0.25 the uplink is 211x below dense fp32 instead of 123x. Spending those bytes on
    /// 2.5% for the matrices did not close the accuracy gap (docs/benchmarks.md), so whole
    /// stays the default: this is for links where bytes count more than tenths of a point.
    public var smallTensorDensity: Double = 1
    /// What top-k ranks a worker's entries by.
    public var rankBy: TopKRank = .update
    /// How the values of top-k gradients travel (uncompressed steps: `denseValues`).
    public var values: ValueCodec = .int8
    /// How every value of an uncompressed step travels, both ways: the workers' gradients
    /// up and the update the coordinator applied down (workers then replay updates; the
    /// downlink of compressed steps goes in bf16). int8 sends about a quarter of fp32's
    /// bytes, each side keeping its rounding for the next step; bf16 half. nil (auto):
    /// fp32, or what `gradient_density: auto` chooses from the measured wire (bf16, int8 or int4);
    /// the coordinator's --gradient-codec then sets the uplink.
    public var denseValues: ValueCodec? = nil
    /// What a worker's top-k is taken of and what keeps what it leaves out.
    public var feedback: TopKFeedback = .residual
    /// Where each step's k entries are chosen: k per tensor, or their sum over the model.
    public var topkScope: TopKScope = .tensor
    /// When a worker's answer to a step is late: it is taken off that step (its images
    /// are counted as missing, in the log and the metrics) and benched after a few misses
    /// in a row, so one slow box or link does not pace the cluster.
    public var stepDeadline = DeadlinePolicy()

    public init() {}

    /// Whether the downlink carries updates (workers keep a replica of the optimizer).
    public var replicatesUpdates: Bool {
        switch downlink {
        case .auto: compresses || (denseValues ?? .fp32) != .fp32
        case .updates: true
        case .weights: false
        }
    }

    /// Whether workers may compress: a density below 1, or auto (decided during the run).
    public var compresses: Bool { targetDensity < 1 }

    /// The density when top-k runs: the configured one, or auto's.
    public var targetDensity: Double { gradientDensity ?? Self.autoDensity }

    /// The density of an auto run that its checkpoint says compresses (auto decided top-k
    /// before 0.5): DGC's 1%, measured in docs/benchmarks.md.
    public static let autoDensity = 0.01
    /// Auto sends every value in int4 (both ways, blocks of 64 values on eight levels of a
    /// bf16 scale, each side keeping its rounding: an eighth of the bytes) when the wire (a
    /// round's time less its slowest worker's computing) takes at least this share of a
    /// step. Measured where auto took int8 (the wire 50% and 73% of an fp32 step at 4 and
    /// 8 hosts, 1 Gbit/s): int4's steps were 7-13% shorter than int8's (fewer bytes also
    /// spare the CPU the hosts share), and it reached DDP's top-1 in 0.72x its time; it
    /// costs about a quarter point more than int8 against svite's own fp32
    /// (docs/benchmarks.md).
    public static let autoInt4Share = 0.4
    /// Auto sends every value in int8 (a quarter of the bytes, each side keeping its
    /// rounding) when the wire takes at least this share of a step.
    public static let autoInt8Share = 0.3
    /// Auto sends every value in bf16 (both ways: half the bytes, a rounding of 2⁻⁹ of
    /// each value) when the wire takes at least this share of a step.
    public static let autoBF16Share = 0.2

    /// The auto dense warm-up of a run whose AdamW variance freezes.
    public static let autoDenseWarmupEpochs = 1.0

    /// What the run does step by step: uncompressed steps first, then top-k at a density
    /// that may fall over a warm-up, and whether (and from which step) AdamW's variance is
    /// frozen.
    /// `lrWarmupSteps`: the learning rate's warm-up; auto freezes no earlier than its end
    /// (frozen at step 117 of a 469-step warm-up, a run diverged at the peak rate).
    /// A variance frozen before any dense step is zero (every update divides by ε and the
    /// run diverges within ten steps): auto then leaves it live and says so in `notice`, as
    /// it does when an explicit dense warm-up ends inside the learning rate's; `on` with no
    /// dense step is refused.
    public func schedule(optimizer: OptimizerConfig.Kind, stepsPerEpoch: Int, lrWarmupSteps: Int = 0) throws -> CompressionSchedule {
        guard compresses else { return CompressionSchedule(denseSteps: 0, densityWarmupSteps: 0, target: 1, freezeStep: nil) }
        var freezes = optimizer == .adamw && freezeVariance != .off
        let perEpoch = Double(max(1, stepsPerEpoch))
        let dense = denseWarmupEpochs.map { Int($0 * perEpoch) }
            ?? (freezes ? max(Int(Self.autoDenseWarmupEpochs * perEpoch), lrWarmupSteps) : 0)
        var notice: String? = nil
        if freezes && (dense == 0 || dense < lrWarmupSteps) {
            let why = dense == 0
                ? "no uncompressed step comes first (dense_warmup_epochs \(denseWarmupEpochs ?? 0)), so AdamW's variance would freeze at zero"
                : "the dense warm-up (\(dense) steps) ends inside the learning rate's (\(lrWarmupSteps) steps), where a frozen variance diverged at the peak rate"
            if freezeVariance == .on && dense == 0 {
                throw ConfigError(file: "config", key: "communication.freeze_variance",
                                  message: "on, but \(why) and every update would divide by eps: set communication.dense_warmup_epochs to at least the learning rate's warm-up, or freeze_variance to auto or off")
            }
            if freezeVariance == .auto {
                freezes = false
                notice = "communication: \(why); the variance stays live (each weight moves about √(1/density) times too little: expect lower accuracy). Set communication.dense_warmup_epochs to at least the learning rate's warm-up (\(lrWarmupSteps) steps) to freeze it"
            } else {
                notice = "communication: freeze_variance is on although \(why)"
            }
        }
        // The estimate stands in for AdamW's first moment under a frozen variance: its
        // updates are linear in the moment, which a live variance (fed the moment's sparse
        // changes) or SGD's momentum (fed the weight decay) are not.
        // It lives in the replicas, so the downlink must carry updates.
        if feedback == .estimate && (!freezes || !replicatesUpdates) {
            let why = !replicatesUpdates
                ? "communication.downlink is weights, so workers hold no replica of the estimate"
                : optimizer != .adamw
                ? "the optimizer is \(optimizer.rawValue); the estimate replaces AdamW's first moment"
                : "AdamW's variance stays live (\(notice ?? "communication.freeze_variance is off"))"
            throw ConfigError(file: "config", key: "communication.feedback",
                              message: "estimate needs AdamW with a frozen variance and the updates downlink, but \(why): set feedback to residual")
        }
        let estimates = feedback == .estimate
        return CompressionSchedule(denseSteps: dense, densityWarmupSteps: Int(densityWarmupEpochs * perEpoch), target: targetDensity,
                                   freezeStep: freezes ? dense : nil, estimateStep: estimates ? dense : nil, notice: notice,
                                   undecided: gradientDensity == nil)
    }
}

/// `communication.downlink`.
public enum Downlink: String, Sendable, Codable, CaseIterable, ConfigChoice {
    /// Updates when the run compresses its gradients, weights otherwise.
    case auto
    /// Every step, each worker is sent the active weights (its own frame).
    case weights
    /// Every step, one frame for all: the merged gradient the optimizer took (plus topology
    /// changes), applied by each worker to its replica of the weights and moments.
    case updates
}

/// `communication.topk_scope`: where a step's k entries are chosen.
public enum TopKScope: String, Sendable, Codable, CaseIterable, ConfigChoice {
    /// ⌈density · active⌉ entries of each tensor (Deep Gradient Compression's layer-wise top-k).
    case tensor
    /// The same number in all, to the largest ranks of the model wherever they are: with
    /// `rank_by: update` the ranks are AdamW steps (each tensor's variance factor included),
    /// comparable across tensors, so the entries sent are those whose absence would move
    /// the weights furthest from AdamW's step. Measured on the default run over three
    /// seeds: no better than per tensor (mean gap 0.52 against 0.47 pt).
    case model
}

/// `communication.freeze_variance`.
public enum VarianceFreeze: String, Sendable, Codable, CaseIterable, ConfigChoice {
    /// Frozen under top-k with AdamW.
    case auto
    /// As auto (SGD has no variance to freeze).
    case on
    /// AdamW keeps updating its variance from the sparse gradients (it moves each weight
    /// about √(1/density) times too little; for comparison).
    case off
}

/// A run's compression, step by step.
public struct CompressionSchedule: Sendable, Equatable {
    /// Steps [0, denseSteps) send every value.
    public var denseSteps: Int
    /// Then the density falls from 25% to the target over this many steps (DGC's warm-up).
    public var densityWarmupSteps: Int
    public var target: Double
    /// AdamW's variance is frozen for the updates of steps from this one on (nil: never).
    public var freezeStep: Int?
    /// From this step on the merged top-k are changes to AdamW's first moment, the shared
    /// estimate (`TopKFeedback.estimate`; nil: gradients, with error feedback).
    public var estimateStep: Int? = nil
    /// Why the schedule is not what the settings alone suggest (the trainer logs it).
    public var notice: String? = nil
    /// `gradient_density: auto` not decided yet: every step is uncompressed until the trainer
    /// calls `decided` (`WireShareMeter.decision`), and the planned freeze waits too.
    public var undecided = false

    public init(denseSteps: Int, densityWarmupSteps: Int, target: Double, freezeStep: Int?, estimateStep: Int? = nil,
                notice: String? = nil, undecided: Bool = false) {
        self.denseSteps = denseSteps; self.densityWarmupSteps = densityWarmupSteps; self.target = target
        self.freezeStep = freezeStep; self.estimateStep = estimateStep; self.notice = notice; self.undecided = undecided
    }

    /// Every value, every step.
    public static let uncompressed = CompressionSchedule(denseSteps: 0, densityWarmupSteps: 0, target: 1, freezeStep: nil)

    /// Auto's decision, taken before step `step`: top-k from that step or `denseSteps`, the
    /// later, with the freeze and estimate moved there too, or every value for the rest.
    public func decided(compress: Bool, at step: Int) -> CompressionSchedule {
        guard undecided else { return self }
        guard compress else { return .uncompressed }
        let start = max(step, denseSteps)
        return CompressionSchedule(denseSteps: start, densityWarmupSteps: densityWarmupSteps, target: target,
                                   freezeStep: freezeStep.map { _ in start }, estimateStep: estimateStep.map { _ in start }, notice: notice)
    }

    /// The density of step `step` (nil: every value goes).
    public func density(step: Int) -> Double? {
        guard !undecided, target < 1, step >= denseSteps else { return nil }
        let start = max(0.25, target)
        let s = step - denseSteps
        guard densityWarmupSteps > 0, s < densityWarmupSteps else { return target }
        let t = Double(s) / Double(densityWarmupSteps)
        return (start.logarithm * (1 - t) + target.logarithm * t).exponential
    }

    /// How the workers send step `step`'s gradient.
    public func compression(step: Int) -> GradientCompression {
        guard let d = density(step: step) else { return .dense }
        return (estimates(step: step) ? TopKFeedback.estimate : .residual).compression(density: d)
    }

    /// Whether the coordinator tracks the frozen variance's scale, so workers send their
    /// gradients' mean squares (the one rule for both).
    public func tracksVariance(_ c: CommunicationConfig) -> Bool { freezeStep != nil && c.trackVariance }

    /// Whether the update of step `step` uses a frozen variance.
    public func freezesVariance(step: Int) -> Bool { !undecided && (freezeStep.map { step >= $0 } ?? false) }

    /// The step whose update first uses a frozen variance (nil: none, or not decided yet).
    public var activeFreezeStep: Int? { undecided ? nil : freezeStep }

    /// Whether the merged gradient of step `step` moves the shared estimate.
    public func estimates(step: Int) -> Bool { estimateStep.map { step >= $0 } ?? false }

    /// What the workers send and from when, in a line for the log (nil: every value).
    public func summary(_ c: CommunicationConfig) -> String? {
        let pinned = c.denseValues.map { $0 == .fp32 ? "every value in fp32" : "every value in \($0.rawValue) both ways" }
        guard target < 1 else { return pinned.map { "wire: \($0)" } }
        var s = "wire: top-k \(target * 100)% of each tensor's active weights"
        if undecided {
            return "wire: auto: " + (pinned ?? "every value; in bf16 both ways once the wire takes \(Int(CommunicationConfig.autoBF16Share * 100))% of a step or more, "
                + "int8 once it takes \(Int(CommunicationConfig.autoInt8Share * 100))%, int4 once it takes \(Int(CommunicationConfig.autoInt4Share * 100))%")
        } else {
            if let pinned, denseSteps > 0 { s = "wire: \(pinned) until step \(denseSteps), then " + s.dropFirst(6) }
            s += denseSteps > 0 ? " from step \(denseSteps) (uncompressed before)" : " from the first step"
        }
        if densityWarmupSteps > 0 { s += ", falling from \(max(0.25, target) * 100)% over \(densityWarmupSteps) steps" }
        if c.denseVectors || c.denseBelow > 0 {
            let small = [c.denseVectors ? "1-D" : nil, c.denseBelow > 0 ? "at most \(c.denseBelow) weights" : nil].compactMap { $0 }.joined(separator: " or ")
            s += c.smallTensorDensity < 1 ? ", tensors \(small) at \(max(c.smallTensorDensity, target) * 100)%" : ", tensors \(small) whole"
        }
        s += ", \(c.values.rawValue) values, "
        s += estimateStep != nil ? "the shared estimate (feedback estimate)" : "error feedback (feedback residual)"
        if let f = freezeStep { s += "; AdamW's variance frozen at step \(f)\(c.trackVariance ? ", tracked per tensor" : "")" }
        return s
    }
}

extension Double {
    fileprivate var logarithm: Double { Foundation.log(self) }
    fileprivate var exponential: Double { Foundation.exp(self) }
}

extension CommunicationConfig: ConfigSection {
    public static let sectionName = "communication"
    public func check(_ m: ConfigMapping) throws {
        if stepDeadline.floorSeconds > stepDeadline.ceilingSeconds {
            throw m.error("step_deadline_floor_seconds",
                          "\(stepDeadline.floorSeconds) is above step_deadline_ceiling_seconds (\(stepDeadline.ceilingSeconds)): the floor must not exceed the ceiling")
        }
    }
    public static var defaults: CommunicationConfig { CommunicationConfig() }
    public static var keys: [ConfigKey<CommunicationConfig>] {
        [
            ConfigKey("gradient_density", read: { m, c in
                guard let s = try m.string("gradient_density") else { return }
                if s == "auto" { c.gradientDensity = nil; return }
                guard let v = Double(s), v > 0 && v <= 1 else {
                    throw m.error("gradient_density", "expected auto or a number in (0, 1] (a fraction of each tensor's active weights; 1 = no compression), found '\(s)'")
                }
                c.gradientDensity = v
            }, write: { $0.gradientDensity.map { "\($0)" } ?? "auto" }),
            .value("density_warmup_epochs", \.densityWarmupEpochs, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            ConfigKey("dense_warmup_epochs", read: { m, c in
                guard let s = try m.string("dense_warmup_epochs") else { return }
                if s == "auto" { c.denseWarmupEpochs = nil; return }
                guard let v = Double(s), v.isFinite, v >= 0 else {
                    throw m.error("dense_warmup_epochs", "expected auto or a number of epochs >= 0, found '\(s)'")
                }
                c.denseWarmupEpochs = v
            }, write: { $0.denseWarmupEpochs.map { "\($0)" } ?? "auto" }),
            .value("freeze_variance", \.freezeVariance),
            .value("track_variance", \.trackVariance),
            .value("dense_vectors", \.denseVectors),
            .value("dense_below", \.denseBelow, check: { $0 >= 0 ? nil : "must be >= 0 (a tensor size in weights; 0: every tensor top-k), got \($0)" }),
            .value("small_tensor_density", \.smallTensorDensity,
                   check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1] (a fraction of each small tensor's active weights; 1 = whole), got \($0)" }),
            .value("rank_by", \.rankBy),
            .value("values", \.values),
            ConfigKey("dense_values", read: { m, c in
                guard let s = try m.string("dense_values") else { return }
                if s == "auto" { c.denseValues = nil; return }
                guard let v = ValueCodec(rawValue: s) else {
                    let names = ValueCodec.allCases.map(\.rawValue).joined(separator: ", ")
                    throw m.error("dense_values", "expected auto, \(names) (how every value of an uncompressed step travels, both ways), found '\(s)'")
                }
                c.denseValues = v
            }, write: { $0.denseValues?.rawValue ?? "auto" }),
            .value("feedback", \.feedback),
            .value("topk_scope", \.topkScope),
            .value("downlink", \.downlink),
            .value("checksum_every_steps", \.checksumEverySteps, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("step_deadline_floor_seconds", \.stepDeadline.floorSeconds,
                   check: { $0 >= 0.1 && $0 <= 3600 ? nil : "must be 0.1 to 3600 seconds (no worker is late sooner), got \($0)" }),
            .value("step_deadline_ceiling_seconds", \.stepDeadline.ceilingSeconds,
                   check: { $0 >= 0.1 && $0 <= 86400 ? nil : "must be 0.1 to 86400 seconds (no worker is given longer), got \($0)" }),
            .value("step_deadline_factor", \.stepDeadline.factor,
                   check: { $0 >= 1 && $0 <= 1000 ? nil : "must be 1 to 1000 (times what a worker's measured speed says its share takes), got \($0)" }),
            .value("missed_steps_to_bench", \.stepDeadline.missesToBench,
                   check: { $0 >= 1 && $0 <= 1000 ? nil : "must be 1 to 1000 (missed deadlines in a row before a worker is benched), got \($0)" }),
        ]
    }
}

extension RunConfig {
    /// The run's compression choices, resolved once: what every worker's `GradientEncoder`
    /// is built from. `denseCodec`: the coordinator's --gradient-codec for uncompressed steps.
    public func compressionSpec(denseCodec: ValueCodec) -> CompressionSpec {
        let c = communication
        return CompressionSpec(denseCodec: denseCodec,
                               topK: TopKSettings(codec: c.values, denseVectors: c.denseVectors, denseBelow: c.denseBelow,
                                                  smallDensity: c.smallTensorDensity, acrossTensors: c.topkScope == .model,
                                                  eps: Float(optimizer.eps)),
                               rankBy: c.rankBy, clipGradNorm: optimizer.clipGradNorm, beta1: Float(optimizer.beta1))
    }
}
