import Config
import Core
import Foundation
import Model
import Optim
import Sparsity

/// What a checkpoint records besides tensors: enough to continue the run exactly.
/// All randomness after initialisation is a pure function of (seed, epoch, step, image),
/// so the step is the whole data cursor and random state.
public struct CheckpointState: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public var format: Int = CheckpointState.currentFormat
    public var runName: String
    /// Updates applied; training continues at this 0-based step.
    public var step: Int
    /// The data cursor: epoch and step within it of the next step.
    public var epoch: Int
    public var stepInEpoch: Int
    public var seed: UInt64
    public var layoutHash: String
    public var optimizer: String
    public var optimizerUpdates: Int
    public var imagesSeen: Int
    /// Training time so far, for ETA and throughput across restarts.
    public var elapsedSeconds: Double
    /// CPU seconds of this process so far (absent in checkpoints written before it was kept).
    public var cpuSeconds: Double?
    public var lastEvalAccuracy: Double?
    public var lastEvalLoss: Double?
    public var createdAt: String
    /// The topology's version (sparse runs only).
    public var maskVersion: Int?
    /// Where the gradients came from: 0 in the training process, N a coordinator that
    /// waits for N workers (absent in older checkpoints); a resume without --workers uses it.
    public var workers: Int?
    /// AdamW's variance is frozen (top-k runs after their dense warm-up); `exp_avg_sq` then
    /// holds the bias-corrected variance. Absent: not frozen.
    public var varianceFrozen: Bool?
    /// The coordinator's `VarianceTracker` (top-k runs that track the frozen variance's
    /// scale). Absent: none.
    public var varianceTracker: VarianceTracker?
    /// `communication.gradient_density: auto`'s decision, once taken. Absent: not taken (or not auto).
    public var wireDecision: WireDecision?

    public init(runName: String, step: Int, epoch: Int, stepInEpoch: Int, seed: UInt64, layoutHash: UInt64,
                optimizer: String, optimizerUpdates: Int, imagesSeen: Int, elapsedSeconds: Double,
                lastEvalAccuracy: Double?, lastEvalLoss: Double?) {
        self.runName = runName; self.step = step; self.epoch = epoch; self.stepInEpoch = stepInEpoch
        self.seed = seed; self.layoutHash = String(layoutHash, radix: 16); self.optimizer = optimizer
        self.optimizerUpdates = optimizerUpdates; self.imagesSeen = imagesSeen; self.elapsedSeconds = elapsedSeconds
        self.lastEvalAccuracy = lastEvalAccuracy; self.lastEvalLoss = lastEvalLoss
        self.createdAt = ISO8601DateFormatter().string(from: Date())
    }
}

public struct CheckpointError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

/// The run cannot go on: what went wrong, at which step, and what is kept.
public struct TrainingError: Error, CustomStringConvertible {
    public var step: Int
    public var message: String
    public var description: String { "step \(step): \(message)" }
}

/// A checkpoint is a safetensors file: the weights under their timm names (so a
/// checkpoint also loads where weights do), the optimizer moments under
/// `optimizer.<moment>.<name>`, and in the metadata the state (JSON) and the effective
/// config (YAML). Written atomically: a crash leaves the previous file intact.
public enum Checkpoint {
    public static let stateKey = "svite.state"
    public static let configKey = "svite.config"
    public static let formatKey = "format"
    /// CRC-32 of the state, the config and every tensor byte (hex), so one flipped bit is
    /// found before a run resumes from it.
    public static let checksumKey = "svite.checksum"

    static func checksum(state: String, config: String, tensors: UInt32) -> String {
        var bytes = Array(state.utf8) + [0] + Array(config.utf8) + [0]
        withUnsafeBytes(of: tensors.littleEndian) { bytes += $0 }
        return String(Checksum.crc32(bytes[...]), radix: 16)
    }
    public static let maskPrefix = "sparsity.mask"
    public static let everActivePrefix = "sparsity.ever_active"
    /// Tensors in a checkpoint that are not weights.
    public static let stateTensorPrefixes = ["optimizer.", "sparsity.", "token_selector.", "wire."]
    /// What int8 updates rounded off and have not applied (`ServerState.updateResidual`).
    public static let updateResidualPrefix = "wire.update_residual"

    public static func fileName(step: Int) -> String { String(format: "step-%08d.safetensors", step) }

    public static func write(to path: String, state: CheckpointState, config: RunConfig, server: ServerState) throws {
        let layout = server.model.layout
        var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = layout.tensors.map {
            (name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(server.params.view($0)))
        }
        for (prefix, buffer) in server.optimizer.stateBuffers {
            tensors += layout.tensors.map {
                (name: "\(prefix).\($0.name)", shape: $0.shape, values: UnsafeBufferPointer(buffer.view($0)))
            }
        }
        if let r = server.updateResidual {
            tensors += layout.tensors.map {
                (name: "\(updateResidualPrefix).\($0.name)", shape: $0.shape, values: UnsafeBufferPointer(r.view($0)))
            }
        }
        var state = state
        if server.optimizer.varianceFrozen { state.varianceFrozen = true }
        if let t = server.varianceTracker, t.steps > 0 { state.varianceTracker = t }
        if let masks = server.masks {
            for (prefix, buffer) in [(maskPrefix, masks.mask), (everActivePrefix, masks.everActive)] {
                tensors += masks.prunable.map {
                    (name: "\(prefix).\($0.name)", shape: $0.shape, values: UnsafeBufferPointer(buffer.view($0)))
                }
            }
            state.maskVersion = masks.version
        }
        // (A NaN evaluation loss must not make the checkpoint unwritable.)
        let enc = RecordCoding.encoder()
        let stateText = String(decoding: try enc.encode(state), as: UTF8.self)
        // The tensor bytes in the order they are written (the file's data section).
        var tensorCRC = RunningCRC()
        for t in tensors { tensorCRC.add(UnsafeRawBufferPointer(t.values)) }
        let metadata = [
            formatKey: "svite-checkpoint",
            stateKey: stateText,
            configKey: config.yaml,
            checksumKey: checksum(state: stateText, config: config.yaml, tensors: tensorCRC.value),
        ]
        try AtomicFile.write(path, data: try SafeTensors.encode(tensors: tensors, metadata: metadata))
    }

    /// A checkpoint file opened and its metadata decoded (tensors not yet copied).
    public struct Contents {
        public var file: SafeTensorsFile
        public var state: CheckpointState
        public var config: RunConfig
    }

    public static func read(_ path: String, overrides: [String] = []) throws -> Contents {
        let file = try SafeTensorsFile(path: path)
        guard file.metadata[formatKey] == "svite-checkpoint", let stateText = file.metadata[stateKey],
              let configText = file.metadata[configKey] else {
            throw CheckpointError(path: path, message: "not an svite checkpoint (no svite.state/svite.config metadata); plain weights go to --init or `svite eval`")
        }
        // Checkpoints written before checksums were kept have none and are taken as they are.
        if let stored = file.metadata[checksumKey],
           stored != checksum(state: stateText, config: configText, tensors: file.dataChecksum) {
            throw CheckpointError(path: path, message: "checksum mismatch: the file is damaged (a flipped bit, a cut copy)")
        }
        let dec = RecordCoding.decoder()
        let state: CheckpointState
        do {
            state = try dec.decode(CheckpointState.self, from: Data(stateText.utf8))
        } catch {
            throw CheckpointError(path: path, message: "unreadable checkpoint state: \(error)")
        }
        guard state.format == CheckpointState.currentFormat else {
            throw CheckpointError(path: path, message: "checkpoint format \(state.format); this svite reads format \(CheckpointState.currentFormat)")
        }
        let config = try RunConfig.parse(yaml: configText, file: "\(path) (stored config)", overrides: overrides)
        return Contents(file: file, state: state, config: config)
    }

    /// Copies weights and moments into `server`, after checking every name, shape and the
    /// layout hash; nothing is written unless everything fits.
    public static func restore(_ c: Contents, into server: ServerState) throws {
        let layout = server.model.layout
        guard c.state.layoutHash == String(layout.hash, radix: 16) else {
            throw CheckpointError(path: c.file.path, message: "parameter layout differs from the config's model (hash \(c.state.layoutHash) vs \(String(layout.hash, radix: 16))); was the model section changed?")
        }
        guard c.state.optimizer == server.optimizer.config.kind.rawValue else {
            throw CheckpointError(path: c.file.path, message: "saved with optimizer \(c.state.optimizer), config says \(server.optimizer.config.kind.rawValue)")
        }
        let prefixes = server.optimizer.stateBuffers.map(\.name)
        let maskBuffers: [(String, FloatBuffer)] = server.masks.map { [(maskPrefix, $0.mask), (everActivePrefix, $0.everActive)] } ?? []
        // Check the moments' and masks' entries before anything is written.
        for (prefix, _) in maskBuffers {
            for t in server.masks!.prunable {
                let name = "\(prefix).\(t.name)"
                guard let e = c.file.entries[name], e.dtype == "F32", e.shape == t.shape else {
                    throw CheckpointError(path: c.file.path, message: "sparse run, but the checkpoint has no usable \(name) (was it saved by a dense run, or with other prunable layers?)")
                }
            }
        }
        for prefix in prefixes {
            for t in layout.tensors {
                let name = "\(prefix).\(t.name)"
                guard let e = c.file.entries[name] else {
                    throw SafeTensorsError.mismatchedTensors(path: c.file.path, missing: [name], unexpected: [])
                }
                guard e.dtype == "F32", e.shape == t.shape else {
                    throw SafeTensorsError.wrongShape(path: c.file.path, tensor: name, found: e.shape, expected: t.shape)
                }
            }
        }
        try c.file.load(into: server.params, layout: layout, strict: true, ignoringPrefixes: stateTensorPrefixes)
        for (prefix, buffer) in server.optimizer.stateBuffers {
            for t in layout.tensors {
                let values = try c.file.floats("\(prefix).\(t.name)")
                let dst = buffer.view(t)
                values.withUnsafeBufferPointer { dst.baseAddress!.update(from: $0.baseAddress!, count: t.count) }
            }
        }
        for (prefix, buffer) in maskBuffers {
            for t in server.masks!.prunable {
                let values = try c.file.floats("\(prefix).\(t.name)")
                let dst = buffer.view(t)
                values.withUnsafeBufferPointer { dst.baseAddress!.update(from: $0.baseAddress!, count: t.count) }
            }
        }
        // Absent (no int8 update yet, or an older checkpoint): nothing was left over.
        if layout.tensors.allSatisfy({ c.file.entries["\(updateResidualPrefix).\($0.name)"]?.shape == $0.shape }) {
            let r = FloatBuffer(count: layout.count)
            for t in layout.tensors {
                let values = try c.file.floats("\(updateResidualPrefix).\(t.name)")
                values.withUnsafeBufferPointer { r.view(t).baseAddress!.update(from: $0.baseAddress!, count: t.count) }
            }
            server.updateResidual = r
        }
        server.masks?.restoreVersion(c.state.maskVersion ?? 0)
        server.restore(step: c.state.step, optimizerUpdates: c.state.optimizerUpdates)
        server.optimizer.restoreFrozenVariance(c.state.varianceFrozen ?? false)
        // A run that tracks takes the tracker's history; an older checkpoint has none, and
        // its frozen variance then stays unscaled (the tracker never saw the freeze).
        if server.varianceTracker != nil, let t = c.state.varianceTracker, t.average.count == server.model.layout.tensors.count {
            server.varianceTracker = t
        }
    }

    /// The checkpoint files in a directory, oldest step first.
    public static func list(in dir: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("step-"), name.hasSuffix(".safetensors"),
                  let step = Int(name.dropFirst(5).dropLast(12)) else { return nil }
            return (step, "\(dir)/\(name)")
        }.sorted { $0.0 < $1.0 }
    }

    /// The run directory a checkpoint file belongs to (RUN/checkpoints/step-N.safetensors
    /// → RUN), or the directory holding any other file: where outputs about it go.
    public static func runDirectory(of file: String) -> String {
        let dir = URL(fileURLWithPath: file).deletingLastPathComponent()
        return (dir.lastPathComponent == "checkpoints" ? dir.deletingLastPathComponent() : dir).path
    }

    /// A checkpoint file, or the newest checkpoint of a run directory (or of its
    /// `checkpoints/` folder).
    public static func locate(_ path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw CheckpointError(path: path, message: "no such file or directory")
        }
        if !isDir.boolValue { return path }
        for dir in ["\(path)/checkpoints", path] {
            if let newest = list(in: dir).last { return newest.path }
        }
        throw CheckpointError(path: path, message: "no checkpoints (step-*.safetensors) in this directory or its checkpoints/ folder")
    }

    /// Deletes all but the newest `keep` checkpoints in `dir` up to step `upTo`: a file of a
    /// later step is not this run's (it resumed from before it), so it neither counts nor goes.
    public static func prune(in dir: String, keep: Int, upTo: Int = .max) {
        let all = list(in: dir).filter { $0.step <= upTo }
        for old in all.dropLast(keep) { try? FileManager.default.removeItem(atPath: old.path) }
    }

    /// The newest checkpoint of a run directory (or the file given) that reads back whole
    /// and, when the run has a config.yaml, is of the run's model; the ones passed over,
    /// newest first, with why.
    public static func newestValid(_ path: String, overrides: [String] = []) throws -> (contents: Contents, skipped: [(path: String, reason: String)]) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw CheckpointError(path: path, message: "no such file or directory")
        }
        if !isDir.boolValue { return (try read(path, overrides: overrides), []) }
        let runLayout = (try? RunConfig.load(path: "\(path)/config.yaml")).map { String(ParameterLayout(config: $0.model).hash, radix: 16) }
        var skipped: [(path: String, reason: String)] = []
        for dir in ["\(path)/checkpoints", path] {
            for candidate in list(in: dir).reversed() {
                do {
                    let c = try read(candidate.path, overrides: overrides)
                    if let runLayout, c.state.layoutHash != runLayout {
                        skipped.append((candidate.path, "another model's checkpoint (layout \(c.state.layoutHash), the run's config.yaml has \(runLayout))"))
                        continue
                    }
                    return (c, skipped)
                } catch {
                    skipped.append((candidate.path, "\(error)"))
                }
            }
            if !skipped.isEmpty { break }
        }
        let why = skipped.isEmpty ? "no checkpoints (step-*.safetensors) in this directory or its checkpoints/ folder"
            : "no usable checkpoint: " + skipped.map { "\(($0.path as NSString).lastPathComponent): \($0.reason)" }.joined(separator: "; ")
        throw CheckpointError(path: path, message: why)
    }
}

/// zlib's CRC-32 over several buffers in turn.
struct RunningCRC {
    private(set) var value: UInt32 = 0
    mutating func add(_ raw: UnsafeRawBufferPointer) { value = Checksum.crc32(continuing: value, raw) }
}
