import Compute
import Config
import Core
import Datasets
import Foundation
import Kernels
import Logging
import Model
import Sparsity

/// Weights from a checkpoint or a safetensors file, with the config they belong to.
public struct LoadedWeights {
    public var config: RunConfig
    public var params: FloatBuffer
    public var path: String
    /// The training step, for checkpoints.
    public var step: Int?
    /// The topology of a sparse model: from a checkpoint's masks, or else (exported
    /// weights of a sparse config) the nonzero weights of the prunable layers.
    public var masks: MaskSet?

    public var sparsityReport: SparsityReport? {
        masks.map { SparsityReport(masks: $0, model: ViTModel(config: config.model)) }
    }

    /// A checkpoint (or run directory) carries its config; a plain safetensors file uses
    /// `config` if given, else the config `svite export` stored in its metadata.
    public static func load(_ path: String, config explicit: RunConfig? = nil, overrides: [String] = []) throws -> LoadedWeights {
        var isDir: ObjCBool = false
        let file = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            ? try Checkpoint.locate(path) : path
        let st = try SafeTensorsFile(path: file)
        var step: Int? = nil
        let config: RunConfig
        if let explicit {
            config = explicit
        } else if st.metadata[Checkpoint.formatKey] == "svite-checkpoint" {
            let c = try Checkpoint.read(file, overrides: overrides)
            config = c.config
            step = c.state.step
        } else if let text = st.metadata[Checkpoint.configKey] {
            config = try RunConfig.parse(yaml: text, file: "\(file) (stored config)", overrides: overrides)
        } else {
            throw CheckpointError(path: file, message: "no config stored in this file; say which model it is with --config")
        }
        let model = ViTModel(config: config.model)
        let params = FloatBuffer(count: model.layout.count)
        try st.load(into: params, layout: model.layout, strict: true, ignoringPrefixes: Checkpoint.stateTensorPrefixes)
        var masks: MaskSet? = nil
        if config.sparsity.isSparse {
            let m = MaskSet(for: config.sparsity, layout: model.layout)
            var rebuilt = false
            for t in m.prunable {
                let dst = m.mask.view(t), ever = m.everActive.view(t)
                if let saved = try? st.floats("\(Checkpoint.maskPrefix).\(t.name)"), saved.count == t.count {
                    for i in 0 ..< t.count { dst[i] = saved[i] }
                } else {
                    rebuilt = true
                    let w = params.view(t)
                    for i in 0 ..< t.count { dst[i] = w[i] != 0 ? 1 : 0 }
                }
                if let e = try? st.floats("\(Checkpoint.everActivePrefix).\(t.name)"), e.count == t.count {
                    for i in 0 ..< t.count { ever[i] = e[i] }
                } else {
                    for i in 0 ..< t.count { ever[i] = dst[i] }
                }
            }
            if rebuilt && m.isStructured {
                UnitSelection(weights: params.pointer, model: model).write(to: m, model: model)
                m.resetExploration()
            }
            masks = m
        }
        return LoadedWeights(config: config, params: params, path: file, step: step, masks: masks)
    }

    /// Accuracy and mean cross-entropy on a split of the config's data set.
    /// `sparseKernels`: nil takes the config's compute.sparse_kernels.
    public func evaluate(split: Split = .test, threads: Int, batch: Int, precision: Precision = .fp32,
                         sparseKernels: SparseKernelMode? = nil, log: Logger? = nil,
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> EvalReport {
        try config.checkData()
        let data = try config.loadData(split)
        let model = ViTModel(config: config.model)
        let evaluator = Evaluator(model: model,
                                  assembler: BatchAssembler(dataset: data, mean: config.data.mean, std: config.data.std,
                                                            augmentation: .none, seed: 0),
                                  batch: batch, threads: threads, precision: precision,
                                  sparseKernels: sparseKernels ?? config.compute.sparseKernels, log: log)
        let clock = MonotonicClock()
        let r = evaluator.evaluate(params: params.pointer, masks: masks, progress: progress)
        return EvalReport(step: step ?? 0, epoch: 0, accuracy: r.accuracy, loss: r.meanLoss, images: r.count, seconds: clock.seconds)
    }

    /// Writes the weights alone (timm names) and a JSON description beside them.
    /// `compact`: a structured run's model with only its kept heads and neurons, as
    /// physically smaller tensors; its config (stored in the file) is a dense model with
    /// per-block `block_heads` and `block_hidden`, and the JSON lists which heads and
    /// neurons of the original survive.
    public func export(to path: String, compact: Bool = false) throws -> String {
        var config = self.config
        var model = ViTModel(config: config.model)
        var values = params
        var units: UnitSelection? = nil
        if compact {
            guard let masks, masks.isStructured else {
                throw CheckpointError(path: self.path, message: "--compact needs a structured run (sparsity.method s2vite or ssp); this one is \(config.sparsity.method.rawValue)")
            }
            let u = UnitSelection(masks: masks, model: model)
            let plan = u.plan(full: model)
            values = FloatBuffer(count: plan.compact.layout.count)
            plan.gather(params.pointer, into: values.pointer)
            model = plan.compact
            config.model = plan.compact.config
            config.sparsity = SparsityConfig()
            units = u
        }
        try SafeTensors.write(params: values, layout: model.layout, to: path,
                              metadata: ["format": "pt", Checkpoint.configKey: config.yaml])
        let m = config.model
        var info = ExportInfo(
            name: config.name, weights: (path as NSString).lastPathComponent, parameters: model.layout.parameterCount,
            model: .init(imageSize: m.imageSize, patchSize: m.patchSize, inChannels: m.inChannels, numClasses: m.numClasses,
                         dim: m.dim, depth: m.depth, heads: m.heads, mlpRatio: m.mlpRatio),
            // timm's VisionTransformer has one head count and MLP width for every block: a
            // compact model with its own per block cannot be built from keyword arguments.
            timmKwargs: compact ? nil : .init(imgSize: m.imageSize, patchSize: m.patchSize, inChans: m.inChannels, numClasses: m.numClasses,
                                              embedDim: m.dim, depth: m.depth, numHeads: m.heads, mlpRatio: m.mlpRatio, classToken: true, globalPool: "token"),
            normalization: .init(mean: config.data.mean, std: config.data.std), source: self.path, step: step)
        if let keep = m.tokenKeep {
            info.tokenSelector = .init(tokenKeep: keep, keptPatches: m.keptPatches, selectorHidden: m.selectorHidden,
                                       note: "timm's VisionTransformer has no token selector: load with strict=False (the token_selector.* tensors are extra) and keep the top-k patch tokens by the selector's score before the blocks")
        }
        if let units {
            info.compact = .init(blockHeads: m.blockHeads ?? [], blockHidden: m.blockHidden ?? [],
                                 keptHeads: units.keptHeads, keptNeurons: units.keptNeurons,
                                 note: "timm's VisionTransformer has one head count and MLP width for all blocks: build each block with its own (attn.qkv rows 3·heads·head_dim, mlp.fc1 rows = block_hidden) or place these tensors back at kept_heads/kept_neurons of a full model with zeros elsewhere")
        }
        let json = try ExportInfo.encoder().encode(info)
        let jsonPath = (path as NSString).deletingPathExtension + ".json"
        try AtomicFile.write(jsonPath, data: json + Data("\n".utf8))
        return jsonPath
    }
}

/// The JSON written beside exported weights: the model's shape, timm's keyword arguments,
/// the input normalisation, and what timm cannot express (a token selector, per-block
/// head counts). Keys are the fields in snake_case (timm's own names in `timm_kwargs`).
public struct ExportInfo: Codable, Sendable, Equatable {
    public struct Shape: Codable, Sendable, Equatable {
        public var imageSize, patchSize, inChannels, numClasses, dim, depth, heads: Int
        public var mlpRatio: Double
    }
    /// Keyword arguments of timm.models.vision_transformer.VisionTransformer.
    public struct TimmKwargs: Codable, Sendable, Equatable {
        public var imgSize, patchSize, inChans, numClasses, embedDim, depth, numHeads: Int
        public var mlpRatio: Double
        public var classToken: Bool
        public var globalPool: String
    }
    public struct Normalization: Codable, Sendable, Equatable {
        public var mean, std: [Double]
    }
    public struct TokenSelector: Codable, Sendable, Equatable {
        public var tokenKeep: Double
        public var keptPatches, selectorHidden: Int
        public var note: String
    }
    public struct Compact: Codable, Sendable, Equatable {
        public var blockHeads, blockHidden: [Int]
        public var keptHeads, keptNeurons: [[Int]]
        public var note: String
    }

    public var name: String
    public var weights: String
    public var parameters: Int
    public var model: Shape
    /// Absent for a compact export (see `compact`).
    public var timmKwargs: TimmKwargs?
    public var normalization: Normalization
    public var source: String
    public var step: Int?
    public var tokenSelector: TokenSelector?
    public var compact: Compact?

    public static func encoder() -> JSONEncoder { RecordCoding.encoder(pretty: true) }
    public static func decoder() -> JSONDecoder { RecordCoding.decoder() }
}
