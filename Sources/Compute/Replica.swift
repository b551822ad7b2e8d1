import Config
import Core
import Datasets
import Foundation
import Kernels
import Logging
import Model
import Sparsity

/// What a worker holds: the model definition, activations, a batch staging area and a
/// gradient buffer. Given parameters and a list of image indices it assembles the batch
/// (normalised, augmented) and computes the mean-loss gradient. It owns no parameters
/// and no optimizer state.
public final class Replica {
    public let model: ViTModel
    public let threads: Int
    public let precision: Precision
    public let assembler: BatchAssembler
    public let smoothing: Float
    /// SViTE+: where the straight-through weights act (training.selector_relaxation).
    public let selectorRelaxation: SelectorRelaxation
    /// SViTE+: what the scores learn from (training.selector_objective).
    public let selectorObjective: SelectorObjective
    /// ∂L/∂θ of the last `computeGradient`, in the parameter layout.
    public let grads: FloatBuffer
    var workspaces: [Int: ViTWorkspace] = [:]
    var images: FloatBuffer
    var labels: [Int32]
    /// Mixup/CutMix: each row's second label and its own label's weight.
    var mixLabels: [Int32]
    var mixWeights: [Float]
    /// Structured runs: the compact model of the current topology (rebuilt when the kept
    /// heads or neurons change, whatever the mask's version number says) with its
    /// parameter and gradient buffers and workspaces.
    var compact: (plan: CompactPlan, params: FloatBuffer, grads: FloatBuffer, workspaces: [Int: ViTWorkspace])?
    /// Full parameters with the inactive units' candidate weights (scoring steps).
    var scoringParams: FloatBuffer?
    /// The unit scores of the last scoring step.
    public private(set) var unitScores: UnitScores?
    /// SViTE+: Gumbel noise per (image, patch) of the current batch.
    var tokenNoise: FloatBuffer?
    /// Unstructured masks: the block layers computed on sparse kernels.
    let sparseLayers: SparseLayerCache
    /// What the last mask's sparse-kernel choice was (nil before the first masked step).
    public var sparseKernelChoice: SparseKernelChoice? { sparseLayers.choice }

    /// `sparseKernels`: how the masked block layers compute (`compute.sparse_kernels`); the
    /// choice is logged to `log`.
    public init(model: ViTModel, assembler: BatchAssembler, threads: Int, smoothing: Float, maxBatch: Int,
                precision: Precision = .fp32, selectorRelaxation: SelectorRelaxation = .attention,
                selectorObjective: SelectorObjective = .taylor, sparseKernels: SparseKernelMode = .off, log: Logger? = nil) {
        self.model = model
        sparseLayers = SparseLayerCache(model: model, mode: sparseKernels, batch: maxBatch, threads: threads, precision: precision,
                                        training: true, log: log)
        self.selectorRelaxation = selectorRelaxation
        self.selectorObjective = selectorObjective
        self.assembler = assembler
        self.threads = threads
        self.precision = precision
        self.smoothing = smoothing
        grads = FloatBuffer(count: model.layout.count)
        images = FloatBuffer(count: maxBatch * model.config.imageValues)
        labels = [Int32](repeating: 0, count: maxBatch)
        mixLabels = [Int32](repeating: 0, count: maxBatch)
        mixWeights = [Float](repeating: 1, count: maxBatch)
        assembler.loader?.threads = threads
    }

    /// One workspace per batch size (a full batch and an epoch's short last batch).
    func workspace(_ batch: Int) -> ViTWorkspace {
        if let ws = workspaces[batch] { return ws }
        let ws = ViTWorkspace(model: model, batch: batch, threads: threads, training: true, precision: precision)
        workspaces[batch] = ws
        return ws
    }

    /// Forward and backward on the images `indices` of epoch `epoch`; the gradient of the
    /// batch-mean loss is left in `grads` (full layout). `next`: the images the next call
    /// will most likely take, decoded in the background while this one computes (image
    /// folders).
    ///
    /// With a structured mask the step runs the compact model (only the kept heads and
    /// neurons) and the gradient is zero on pruned units. With a unit-score request it instead
    /// runs the full model with the inactive units given their candidate weights (which
    /// add exactly nothing to the output, so the loss and the active units' gradients are
    /// those of the compact model) and leaves the per-unit scores in `unitScores`.
    @discardableResult
    public func computeGradient(params: UnsafePointer<Float>, indices: [Int32], epoch: Int,
                                masks: MaskSet? = nil, request: StepRequest = .none,
                                selector: SelectorSchedule? = nil, next: (indices: [Int32], epoch: Int)? = nil) -> BatchResult {
        let b = indices.count
        precondition(b >= 1 && b <= labels.count, "Replica: batch of \(b) images (staging holds \(labels.count))")
        let tokens = selector.map { sel in
            TokenSelection(noise: UnsafePointer(gumbelNoise(indices: indices, epoch: epoch)), temperature: sel.temperature,
                           noiseScale: sel.noiseScale, relaxation: selectorRelaxation, objective: selectorObjective)
        }
        let mixes = assembler.augmentation.mixes
        return labels.withUnsafeMutableBufferPointer { lab in
          mixLabels.withUnsafeMutableBufferPointer { ml in
          mixWeights.withUnsafeMutableBufferPointer { mw in
            assembler.fill(images: images.pointer, labels: lab.baseAddress!, indices: indices, epoch: epoch, augment: true,
                           mix: mixes ? (ml.baseAddress!, mw.baseAddress!) : nil)
            let mix = mixes ? MixedTargets(labels: ml.baseAddress!, weights: mw.baseAddress!) : nil
            if let next { assembler.prefetch(indices: next.indices, epoch: next.epoch, augment: true) }
            guard let masks, masks.isStructured else {
                return model.forwardBackward(params: params, grads: grads.pointer, images: images.pointer,
                                             labels: lab.baseAddress!, smoothing: smoothing, workspace: workspace(b),
                                             selection: tokens, mix: mix, sparse: sparseLayers.layers(for: masks),
                                             fullWeightGradient: request.needsInactiveGradient)
            }
            if let seed = request.unitScoreSeed {
                let full = scoringParams ?? FloatBuffer(count: model.layout.count)
                scoringParams = full
                full.pointer.update(from: params, count: model.layout.count)
                let selection = UnitSelection(masks: masks, model: model)
                UnitCandidates.writeInactive(selection, model: model, seed: seed, into: full.pointer)
                var scores = UnitScores(config: model.config)
                let result = scores.headTaylor.withUnsafeMutableBufferPointer { saliency in
                    model.forwardBackward(params: full.pointer, grads: grads.pointer, images: images.pointer,
                                          labels: lab.baseAddress!, smoothing: smoothing, workspace: workspace(b),
                                          headSaliency: saliency.baseAddress!, selection: tokens, mix: mix)
                }
                scores.setGrowScores(gradient: grads.pointer, model: model)
                unitScores = scores
                return result
            }
            let c = compactModel(masks)
            let ws = c.workspaces[b] ?? ViTWorkspace(model: c.plan.compact, batch: b, threads: threads, training: true, precision: precision)
            compact?.workspaces[b] = ws
            c.plan.gather(params, into: c.params.pointer)
            let result = c.plan.compact.forwardBackward(params: c.params.pointer, grads: c.grads.pointer, images: images.pointer,
                                                        labels: lab.baseAddress!, smoothing: smoothing, workspace: ws,
                                                        selection: tokens, mix: mix)
            c.plan.scatter(c.grads.pointer, into: grads.pointer)
            return result
          }
          }
        }
    }

    /// Gumbel(0, 1) noise for each image's patches, drawn from (seed, epoch, image), so a
    /// worker holding part of a batch draws what one process would.
    func gumbelNoise(indices: [Int32], epoch: Int) -> UnsafeMutablePointer<Float> {
        let p = model.config.numPatches
        let buffer = tokenNoise ?? FloatBuffer(count: labels.count * p)
        tokenNoise = buffer
        for (i, image) in indices.enumerated() {
            var rng = Xoshiro256(seed: StreamSeed.mix(assembler.seed, StreamSeed.tokenNoise, UInt64(epoch), UInt64(image)))
            for j in 0 ..< p { buffer.pointer[i * p + j] = rng.nextGumbel() }
        }
        return buffer.pointer
    }

    /// The compact model for the mask's current topology.
    func compactModel(_ masks: MaskSet) -> (plan: CompactPlan, params: FloatBuffer, grads: FloatBuffer, workspaces: [Int: ViTWorkspace]) {
        let units = UnitSelection(masks: masks, model: model)
        if let c = compact, c.plan.keeps(units.keptHeads, units.keptNeurons) { return c }
        let plan = units.plan(full: model)
        let c = (plan: plan, params: FloatBuffer(count: plan.compact.layout.count),
                 grads: FloatBuffer(count: plan.compact.layout.count), workspaces: [Int: ViTWorkspace]())
        compact = c
        return c
    }
}

extension Replica {
    /// The replica a run's config makes (the trainer's in one process, each worker's):
    /// its data pipeline, label smoothing, batch, selector and sparse kernels as the config
    /// says; `threads`, `precision` and `sparseKernels` as this machine resolved them.
    public convenience init(config: RunConfig, dataset: ImageDataset, threads: Int, precision: Precision,
                            sparseKernels: SparseKernelMode? = nil, log: Logger? = nil) {
        let d = config.data, t = config.training
        self.init(model: ViTModel(config: config.model),
                  assembler: BatchAssembler(dataset: dataset, mean: d.mean, std: d.std, augmentation: d.augmentation, seed: t.seed, prefetch: d.prefetch),
                  threads: threads, smoothing: Float(t.labelSmoothing), maxBatch: t.batchSize, precision: precision,
                  selectorRelaxation: t.selectorRelaxation, selectorObjective: t.selectorObjective,
                  sparseKernels: sparseKernels ?? config.compute.sparseKernels, log: log)
    }

    /// The images of a share (`positions` of `epoch`), and the likely next share's when an
    /// image folder can decode them while this one computes (nil otherwise).
    public func shareImages(_ positions: Range<Int>, epoch: Int, order: inout EpochOrder) -> (indices: [Int32], next: (indices: [Int32], epoch: Int)?) {
        let indices = order.indices(positions, epoch: epoch)
        return (indices, assembler.loader == nil ? nil : order.next(after: positions, epoch: epoch))
    }
}


/// Top-1 accuracy and mean (unsmoothed) cross-entropy over a whole split.
public final class Evaluator {
    public let model: ViTModel
    public let assembler: BatchAssembler
    public let batch: Int
    public let threads: Int
    public let precision: Precision
    var workspaces: [Int: ViTWorkspace] = [:]
    let images: FloatBuffer
    var labels: [Int32]
    /// Unstructured masks: the block layers computed on sparse kernels.
    let sparseLayers: SparseLayerCache

    public init(model: ViTModel, assembler: BatchAssembler, batch: Int, threads: Int, precision: Precision = .fp32,
                sparseKernels: SparseKernelMode = .off, log: Logger? = nil) {
        self.model = model
        self.assembler = assembler
        self.batch = min(batch, assembler.dataset.count)
        self.threads = threads
        self.precision = precision
        sparseLayers = SparseLayerCache(model: model, mode: sparseKernels, batch: min(self.batch, Self.chunk(threads: threads)),
                                        threads: threads, precision: precision, training: false, log: log)
        images = FloatBuffer(count: self.batch * model.config.imageValues)
        labels = [Int32](repeating: 0, count: self.batch)
        assembler.loader?.threads = threads
    }

    /// Images per forward pass: a workspace holds every block's activations (about 2 MB an
    /// image for fmnist-tiny), so the default eval batch of 500 made a 1.07 GB workspace
    /// (the coordinator's memory jumped from 80 MB to 1.08 GB at its first evaluation);
    /// 32 images a thread are as fast and hold about 0.13 GB at 2 threads.
    public var chunk: Int { Self.chunk(threads: threads) }
    static func chunk(threads: Int) -> Int { max(1, 32 * threads) }

    /// Structured masks: the compact model of the topology last evaluated.
    var compact: (plan: CompactPlan, params: FloatBuffer, workspaces: [Int: ViTWorkspace])?

    /// `masks`: a structured run is evaluated on its compact model (same result, less work).
    public func evaluate(params full: UnsafePointer<Float>, masks: MaskSet? = nil, progress: (Int, Int) -> Void = { _, _ in }) -> BatchResult {
        var model = self.model
        var params = full
        let sparse = sparseLayers.layers(for: masks)
        if let masks, masks.isStructured {
            let units = UnitSelection(masks: masks, model: model)
            if compact?.plan.keeps(units.keptHeads, units.keptNeurons) != true {
                let plan = units.plan(full: model)
                compact = (plan, FloatBuffer(count: plan.compact.layout.count), [:])
            }
            let c = compact!
            c.plan.gather(full, into: c.params.pointer)
            model = c.plan.compact
            params = UnsafePointer(c.params.pointer)
        }
        let n = assembler.dataset.count
        var total = BatchResult()
        var start = 0
        while start < n {
            let b = min(batch, chunk, n - start)
            let ws: ViTWorkspace
            if model === self.model {
                ws = workspaces[b] ?? ViTWorkspace(model: model, batch: b, threads: threads, training: false, precision: precision)
                workspaces[b] = ws
            } else {
                ws = compact!.workspaces[b] ?? ViTWorkspace(model: model, batch: b, threads: threads, training: false, precision: precision)
                compact!.workspaces[b] = ws
            }
            let indices = (Int32(start) ..< Int32(start + b)).map { $0 }
            total = total + labels.withUnsafeMutableBufferPointer { lab in
                assembler.fill(images: images.pointer, labels: lab.baseAddress!, indices: indices, epoch: 0, augment: false)
                // An image folder's next chunk decodes while this one computes.
                let next = start + b
                if next < n {
                    assembler.prefetch(indices: (Int32(next) ..< Int32(min(n, next + min(batch, chunk)))).map { $0 }, epoch: 0, augment: false)
                }
                return model.forward(params: params, images: images.pointer, labels: lab.baseAddress!, smoothing: 0, workspace: ws,
                                     sparse: model === self.model ? sparse : nil)
            }
            start += b
            progress(start, n)
        }
        return total
    }
}

