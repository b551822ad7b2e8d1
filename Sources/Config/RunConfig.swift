import Core
import Datasets
import Foundation
import Kernels
import Model
import Sparsity
import Yams

/// The `training:` section.
public struct TrainingConfig: Sendable, Equatable, Codable {
    public var epochs: Int = 7
    /// Stop after this many steps even if epochs remain (0 = no limit).
    public var maxSteps: Int = 0
    public var batchSize: Int = 128
    public var labelSmoothing: Double = 0.1
    public var seed: UInt64 = 0
    /// Evaluate on the test split every this many epochs (0 = only at the end).
    public var evalEveryEpochs: Int = 1
    public var evalBatchSize: Int = 500
    /// Write a checkpoint every this many steps (0 = only at epoch ends); one is always
    /// written at the end.
    public var checkpointEverySteps: Int = 0
    public var keepCheckpoints: Int = 3
    /// A metrics line (mean loss over the window, img/s) every this many steps.
    public var logEverySteps: Int = 20
    /// Threads for computation (0 = all cores).
    public var threads: Int = 0
    /// SViTE+: the token selector's softmax temperature τ, annealed linearly from the
    /// first to the second over the run.
    public var selectorTauStart: Double = 10
    public var selectorTauEnd: Double = 0.1
    /// SViTE+: what the straight-through weights scale: each kept token's attention weight
    /// as a key (`attention`, the default) or its embedding (`token_scale`, the paper's
    /// Algorithm 2, which on Fashion-MNIST learns to remove the garment).
    public var selectorRelaxation: SelectorRelaxation = .attention
    /// SViTE+: what the scores learn from: `taylor` (the absolute first-order importance
    /// |∂L/∂w| of each kept token, the default) or `straight_through` (the paper's signed
    /// gradient).
    public var selectorObjective: SelectorObjective = .taylor
    /// SViTE+: the fraction of the run over which the Gumbel noise of the training
    /// selection decays linearly to zero (0: full noise to the end, as the paper), so the
    /// last steps train on the deterministic selection that evaluation uses.
    public var selectorNoiseDecay: Double = 0.5
    /// The operand type of the matrix products: fp32, or bf16 (fp32 accumulation, fp32
    /// master weights, gradients and optimizer). A CPU without native bf16 products
    /// (AVX512-BF16 or AMX) runs fp32 and says so.
    public var precision: Precision = .fp32
    /// What a step whose loss or averaged gradient is NaN or infinite does: `stop` the run
    /// (the default; the last checkpoint is a good one) or `skip` the step (no update, as
    /// mixed-precision loss scaling does) and go on, stopping after `max_skipped_steps`
    /// skips in a row, since by then the run has diverged rather than hit one bad batch.
    public var onNonFinite: NonFiniteAction = .stop
    public var maxSkippedSteps: Int = 10

    public init() {}

    /// The thread count to use: the config's, or every core when it says 0.
    public var resolvedThreads: Int { threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount }
}

extension TrainingConfig: ConfigSection {
    public static let sectionName = "training"
    public static var defaults: TrainingConfig { TrainingConfig() }

    public static var keys: [ConfigKey<TrainingConfig>] {
        [
            .value("epochs", \.epochs, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            .value("max_steps", \.maxSteps, check: { $0 >= 0 ? nil : "must be >= 0 (0 = no limit), got \($0)" }),
            .value("batch_size", \.batchSize, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("label_smoothing", \.labelSmoothing, check: { (0 ..< 1).contains($0) ? nil : "must be in [0, 1), got \($0)" }),
            ConfigKey("seed", read: { m, c in
                guard let s = try m.int("seed") else { return }
                guard s >= 0 else { throw m.error("seed", "must be >= 0, got \(s)") }
                c.seed = UInt64(s)
            }, write: { "\($0.seed)" }),
            .value("eval_every_epochs", \.evalEveryEpochs, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            .value("eval_batch_size", \.evalBatchSize, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("checkpoint_every_steps", \.checkpointEverySteps, check: { $0 >= 0 ? nil : "must be >= 0, got \($0)" }),
            .value("keep_checkpoints", \.keepCheckpoints, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("log_every_steps", \.logEverySteps, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("threads", \.threads, check: { (0 ... 1024).contains($0) ? nil : "must be 0 (all cores) to 1024, got \($0)" }),
            .value("selector_tau_start", \.selectorTauStart, check: { $0 > 0 ? nil : "must be > 0, got \($0)" }),
            .value("selector_tau_end", \.selectorTauEnd, check: { $0 > 0 ? nil : "must be > 0, got \($0)" }),
            .value("selector_relaxation", \.selectorRelaxation),
            .value("selector_objective", \.selectorObjective),
            .value("selector_noise_decay", \.selectorNoiseDecay,
                   check: { (0 ... 1).contains($0) ? nil : "must be in [0, 1] (a fraction of the run; 0 = no decay), got \($0)" }),
            .value("precision", \.precision),
            .value("on_nonfinite", \.onNonFinite),
            .value("max_skipped_steps", \.maxSkippedSteps, check: { $0 >= 1 ? nil : "must be at least 1 (skips in a row before the run stops), got \($0)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws {
        if epochs == 0 && maxSteps == 0 { throw m.error("epochs", "epochs and max_steps are both 0: nothing to train") }
    }
}

extension SelectorRelaxation: ConfigChoice {}
extension SelectorObjective: ConfigChoice {}
extension Precision: ConfigChoice {}
extension NonFiniteAction: ConfigChoice {}

/// `training.on_nonfinite`: what a step with a NaN or infinite loss or gradient does.
public enum NonFiniteAction: String, Sendable, CaseIterable, Codable {
    /// Stop the run without applying it; the last checkpoint is a good one.
    case stop
    /// Leave the weights, moments and masks as they are, count the step and go on.
    case skip
}
extension BackendChoice: ConfigChoice {}
extension SparseKernelMode: ConfigChoice {}

/// The `compute:` section: how this machine computes. Each process decides for itself
/// (a worker may run another backend than the coordinator); only `training.precision`
/// must agree across the cluster.
public struct ComputeConfig: Sendable, Equatable, Codable {
    /// auto: oneDNN on x86-64, OpenBLAS elsewhere.
    public var backend: BackendChoice = .auto
    /// Whether masked block layers run on the sparse kernels: auto (the faster of dense and
    /// sparse per layer, measured), on, off.
    public var sparseKernels: SparseKernelMode = .auto

    public init() {}

}

extension ComputeConfig: ConfigSection {
    public static let sectionName = "compute"
    public static var defaults: ComputeConfig { ComputeConfig() }
    public static var keys: [ConfigKey<ComputeConfig>] { [.value("backend", \.backend), .value("sparse_kernels", \.sparseKernels)] }
}

/// A whole run config: every section validated, every unknown key an error naming the
/// file and the key. `yaml` is the effective config with every default written out, as
/// it is stored in checkpoints.
public struct RunConfig: Sendable, Equatable {
    public var name: String
    public var model: ViTConfig
    public var data: DataConfig
    public var optimizer: OptimizerConfig
    public var schedule: ScheduleConfig
    public var training: TrainingConfig
    public var sparsity: SparsityConfig
    public var compute: ComputeConfig
    public var communication: CommunicationConfig
    /// Where the config came from (a path, a built-in name, or a checkpoint).
    public var source: String

    public static let sections = ["name", "model", "data", "optimizer", "schedule", "training", "sparsity", "compute", "communication"]

    public init(name: String, model: ViTConfig, data: DataConfig = DataConfig(), optimizer: OptimizerConfig = OptimizerConfig(),
                schedule: ScheduleConfig = ScheduleConfig(), training: TrainingConfig = TrainingConfig(),
                sparsity: SparsityConfig = SparsityConfig(), compute: ComputeConfig = ComputeConfig(),
                communication: CommunicationConfig = CommunicationConfig(), source: String = "<code>") {
        self.name = name; self.model = model; self.data = data; self.optimizer = optimizer
        self.schedule = schedule; self.training = training; self.sparsity = sparsity; self.compute = compute
        self.communication = communication; self.source = source
    }

    /// Parses YAML text with `--set` overrides applied first. A key that came from an
    /// override is reported as `--set`.
    public static func parse(yaml text: String, file: String, overrides: [String] = []) throws -> RunConfig {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError(file: file, key: "", message: "not valid YAML: \(error)")
        }
        let merged = try ConfigOverrides.apply(overrides, to: node, file: file)
        let overridden = Set(overrides.compactMap { $0.split(separator: "=", maxSplits: 1).first.map { String($0).trimmingCharacters(in: .whitespaces) } })
        do {
            return try parse(node: merged, file: file)
        } catch let e as ConfigError {
            var errors = ConfigErrors()
            for var one in e.all {
                if overridden.contains(where: { one.key == $0 || one.key.hasPrefix($0 + ".") || $0.hasPrefix(one.key + ".") && !one.key.isEmpty }) {
                    one.file = "--set (over \(file))"
                }
                try errors.attempt { throw one }
            }
            try errors.throwIfAny()
            throw e
        }
    }

    static func parse(node: Node, file: String) throws -> RunConfig {
        let root = try ConfigMapping(node: node, file: file, path: "")
        let name = try root.string("name") ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        guard let modelMap = try root.mapping("model") else {
            throw ConfigError(file: file, key: "model", message: "missing (required): the model's shape (see configs/fmnist-tiny.yaml)")
        }
        // Every section is read even when one has a problem, so all of them are reported.
        var errors = ConfigErrors()
        let model = try errors.attempt { try ViTConfig.parse(modelMap) }
        let data = try errors.attempt { try DataConfig.parse(try root.mapping("data")) }
        let optimizer = try errors.attempt { try OptimizerConfig.parse(try root.mapping("optimizer")) }
        let schedule = try errors.attempt { try ScheduleConfig.parse(try root.mapping("schedule")) }
        let training = try errors.attempt { try TrainingConfig.parse(try root.mapping("training")) }
        let sparsity = try errors.attempt { try SparsityConfig.parse(try root.mapping("sparsity")) }
        let compute = try errors.attempt { try ComputeConfig.parse(try root.mapping("compute")) }
        let communication = try errors.attempt { try CommunicationConfig.parse(try root.mapping("communication")) }
        try errors.attempt { try root.finish() }
        try errors.throwIfAny()
        guard let model, let data, let optimizer, let schedule, let training, let sparsity, let compute, let communication else {
            throw ConfigError(file: file, key: "", message: "a section could not be read")
        }
        if model.isCompact && sparsity.method.isStructured {
            throw ConfigError(file: file, key: "sparsity.method",
                              message: "\(sparsity.method.rawValue) prunes heads and neurons of a full model, but model.block_heads/block_hidden make this one compact already; train it with dense or svite, or start from the full model")
        }
        return RunConfig(name: name, model: model, data: data, optimizer: optimizer, schedule: schedule,
                         training: training, sparsity: sparsity, compute: compute, communication: communication, source: file)
    }

    public static func load(path: String, overrides: [String] = []) throws -> RunConfig {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, key: "", message: "cannot read the file (missing, unreadable or not UTF-8)")
        }
        return try parse(yaml: text, file: path, overrides: overrides)
    }

    /// A path, then configs/NAME.yaml under the working directory, then a config built
    /// into the binary (the same text as the repository's configs/).
    public static func resolve(_ nameOrPath: String, overrides: [String] = [], searchDirectory: String = "configs") throws -> RunConfig {
        let fm = FileManager.default
        for path in [nameOrPath, "\(searchDirectory)/\(nameOrPath).yaml"] {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
                return try load(path: path, overrides: overrides)
            }
        }
        if let text = BuiltinConfigs.all[nameOrPath] {
            return try parse(yaml: text, file: "<built-in \(nameOrPath)>", overrides: overrides)
        }
        let names = BuiltinConfigs.all.keys.sorted().joined(separator: ", ")
        throw ConfigError(file: nameOrPath, key: "", message: "no such file, and not a built-in config (built-in: \(names))")
    }

    /// Checks the data set fits the model (image size, channels, classes); commands that
    /// touch data call it, so model-only configs such as deit-tiny still serve `bench`.
    public func checkData() throws { try data.check(against: model, file: source) }

    /// One split of the run's data, in the model's size and channels; an image folder's
    /// classes are checked against model.num_classes here (only the folder knows them).
    public func loadData(_ split: Split) throws -> ImageDataset {
        let set = try data.load(split, channels: model.inChannels, size: model.imageSize)
        if data.kind == .imageFolder && split == .train && set.classes != model.numClasses {
            throw ConfigError(file: source, key: "model.num_classes",
                              message: "is \(model.numClasses) but \(data.directory)/train has \(set.classes) class folders (\(set.classNames?.prefix(5).joined(separator: ", ") ?? "")\(set.classes > 5 ? ", …" : ""))")
        }
        return set
    }

    /// The effective config, every default written out; parses back to an equal value.
    public var yaml: String {
        "name: \(name)\n" + model.yaml + data.yaml + optimizer.yaml + schedule.yaml + training.yaml + sparsity.yaml + compute.yaml + communication.yaml
    }

    /// Steps per epoch and in the whole run for a training set of `trainCount` images.
    public func stepCounts(trainCount: Int) -> (perEpoch: Int, total: Int) {
        let perEpoch = (trainCount + training.batchSize - 1) / training.batchSize
        var total = training.epochs * perEpoch
        if training.maxSteps > 0 { total = training.epochs > 0 ? min(total, training.maxSteps) : training.maxSteps }
        return (perEpoch, total)
    }
}

extension RunConfig {
    /// SViTE+: the selector's temperature τ (linear from selector_tau_start to
    /// selector_tau_end) and Gumbel-noise scale (linear from 1 to 0 over the first
    /// selector_noise_decay of the run) at `step` of `total`; nil without a selector.
    public func selectorSchedule(step: Int, total: Int) -> SelectorSchedule? {
        guard model.hasTokenSelector else { return nil }
        let t = total > 1 ? min(1, Double(step) / Double(total - 1)) : 1
        let decay = training.selectorNoiseDecay
        return SelectorSchedule(temperature: Float(training.selectorTauStart + (training.selectorTauEnd - training.selectorTauStart) * t),
                                noiseScale: decay > 0 ? Float(max(0, 1 - t / decay)) : 1)
    }

    /// The seed of the run's topology: SViTE's random initial mask, S2ViTE's initial
    /// units and (mixed with the step) its candidate weights.
    public var topologySeed: UInt64 { StreamSeed.mix(training.seed, StreamSeed.topology) }
}

extension DataConfig {
    /// Checks the data set fits the model, naming the model key that disagrees.
    public func check(against model: ViTConfig, file: String) throws {
        let k = kind
        if k == .imageFolder {
            guard model.inChannels == 1 || model.inChannels == 3 else {
                throw ConfigError(file: file, key: "model.in_channels", message: "is \(model.inChannels); pictures from an image folder come as RGB (3) or grey (1)")
            }
            for (key, list) in [("data.mean", mean), ("data.std", std)] where list.count != model.inChannels {
                throw ConfigError(file: file, key: key, message: "has \(list.count) value(s) but the model takes \(model.inChannels) channel(s): give one per channel (e.g. [0.5] for grey pictures)")
            }
            return
        }
        if model.inChannels != k.channels {
            throw ConfigError(file: file, key: "model.in_channels", message: "is \(model.inChannels) but \(k.rawValue) images have \(k.channels) channel(s)")
        }
        if model.imageSize != k.imageSize {
            throw ConfigError(file: file, key: "model.image_size", message: "is \(model.imageSize) but \(k.rawValue) images are \(k.imageSize)×\(k.imageSize)")
        }
        if model.numClasses != k.classes {
            throw ConfigError(file: file, key: "model.num_classes", message: "is \(model.numClasses) but \(k.rawValue) has \(k.classes) classes")
        }
    }
}
