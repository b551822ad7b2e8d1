import Datasets
import Kernels
import Model

/// What a worker holds: the model definition, activations, a batch staging area and a
/// gradient buffer. Given parameters and a list of image indices it assembles the batch
/// (normalised, augmented) and computes the mean-loss gradient. It owns no parameters
/// and no optimizer state.
public final class Replica: @unchecked Sendable {
    public let model: ViTModel
    public let threads: Int
    public let assembler: BatchAssembler
    public let smoothing: Float
    /// ∂L/∂θ of the last `computeGradient`, in the parameter layout.
    public let grads: FloatBuffer
    var workspaces: [Int: ViTWorkspace] = [:]
    var images: FloatBuffer
    var labels: [Int32]

    public init(model: ViTModel, assembler: BatchAssembler, threads: Int, smoothing: Float, maxBatch: Int) {
        self.model = model
        self.assembler = assembler
        self.threads = threads
        self.smoothing = smoothing
        grads = FloatBuffer(count: model.layout.count)
        images = FloatBuffer(count: maxBatch * model.config.imageValues)
        labels = [Int32](repeating: 0, count: maxBatch)
    }

    /// One workspace per batch size (a full batch and an epoch's short last batch).
    func workspace(_ batch: Int) -> ViTWorkspace {
        if let ws = workspaces[batch] { return ws }
        let ws = ViTWorkspace(model: model, batch: batch, threads: threads, training: true)
        workspaces[batch] = ws
        return ws
    }

    /// Forward and backward on the images `indices` of epoch `epoch`; the gradient of the
    /// batch-mean loss is left in `grads`.
    @discardableResult
    public func computeGradient(params: UnsafePointer<Float>, indices: [Int32], epoch: Int) -> BatchResult {
        let b = indices.count
        precondition(b >= 1 && b <= labels.count, "Replica: batch of \(b) images (staging holds \(labels.count))")
        let ws = workspace(b)
        return labels.withUnsafeMutableBufferPointer { lab in
            assembler.fill(images: images.pointer, labels: lab.baseAddress!, indices: indices, epoch: epoch, augment: true)
            return model.forwardBackward(params: params, grads: grads.pointer, images: images.pointer,
                                         labels: lab.baseAddress!, smoothing: smoothing, workspace: ws)
        }
    }
}

/// Top-1 accuracy and mean (unsmoothed) cross-entropy over a whole split.
public final class Evaluator: @unchecked Sendable {
    public let model: ViTModel
    public let assembler: BatchAssembler
    public let batch: Int
    public let threads: Int
    var workspaces: [Int: ViTWorkspace] = [:]
    let images: FloatBuffer
    var labels: [Int32]

    public init(model: ViTModel, assembler: BatchAssembler, batch: Int, threads: Int) {
        self.model = model
        self.assembler = assembler
        self.batch = min(batch, assembler.dataset.count)
        self.threads = threads
        images = FloatBuffer(count: self.batch * model.config.imageValues)
        labels = [Int32](repeating: 0, count: self.batch)
    }

    public func evaluate(params: UnsafePointer<Float>, progress: (Int, Int) -> Void = { _, _ in }) -> BatchResult {
        let n = assembler.dataset.count
        var total = BatchResult()
        var start = 0
        while start < n {
            let b = min(batch, n - start)
            let ws = workspaces[b] ?? ViTWorkspace(model: model, batch: b, threads: threads, training: false)
            workspaces[b] = ws
            let indices = (Int32(start) ..< Int32(start + b)).map { $0 }
            total = total + labels.withUnsafeMutableBufferPointer { lab in
                assembler.fill(images: images.pointer, labels: lab.baseAddress!, indices: indices, epoch: 0, augment: false)
                return model.forward(params: params, images: images.pointer, labels: lab.baseAddress!, smoothing: 0, workspace: ws)
            }
            start += b
            progress(start, n)
        }
        return total
    }
}
