import Config
import Core
import Foundation
import Kernels
import Model
import Optim
import Sparsity

/// `svite bench model --sparsity S`: the model with SViTE's unstructured masks at sparsity
/// S (ERK over the block layers, as training starts), its masked layers on the sparse
/// kernels as `compute.sparse_kernels` chooses them, against the same masked model on
/// dense products, each pair timed alternately in this run.
extension ModelBenchmark {
    public struct UnstructuredRow: Codable, Sendable {
        public struct Layer: Codable, Sendable {
            /// attn.qkv, attn.proj, mlp.fc1, mlp.fc2: every block's layer of that kind.
            public var kind: String
            public var density: Double
            public var sparseLayers: Int
            public var layers: Int
            /// One lane's pass through all blocks' layers of this kind, as measured for the choice.
            public var denseMs: Double
            public var sparseMs: Double
        }

        public var sparsity: Double
        /// "ERK" (a fresh mask at that sparsity) or the checkpoint the masks came from.
        public var masks: String
        public var mode: SparseKernelMode
        /// What the choice said for training (forward + backward) and for inference.
        public var trainChoice: String
        public var inferenceChoice: String
        public var layers: [Layer]
        /// Train step (forward, loss, backward, AdamW) and inference (forward), each
        /// against the masked model on dense products timed alternately with it.
        public var trainStep: Timing
        public var denseTrainStep: Timing
        public var trainSpeedup: Double
        public var forward: Timing
        public var denseForward: Timing
        public var forwardSpeedup: Double
        /// The masked layers' weights and their sparse layouts (CSR and CSC), MiB.
        public var layoutMiB: Double
        public var maskedWeightsMiB: Double
        /// No layer ran sparse in either pass: both sides computed the same thing, and the
        /// speed-ups show the timing's noise.
        public var sameComputation: Bool
    }

    /// One row per sparsity; `timePair` times a variant against a reference alternately
    /// and gives 1 − the median ratio.
    /// `ws`: the training workspace the dense rows ran in (one is 2.3 GiB for DeiT-Tiny at batch 64).
    func unstructuredRows(model: ViTModel, params: FloatBuffer, images: FloatBuffer, labels: [Int32], workspace ws: ViTWorkspace,
                          timePair: (String, () -> Void, Double, () -> Void, Double) -> (reference: Timing, variant: Timing, saving: Double))
        -> [UnstructuredRow] {
        let o = options
        let flops = model.forwardFLOPsPerImage * Double(o.batch)
        let trainCosts = MeasuredLayerCosts(model: model, batch: o.batch, threads: o.threads, precision: o.precision, training: true)
        let inferCosts = MeasuredLayerCosts(model: model, batch: o.batch, threads: o.threads, precision: o.precision, training: false)
        let infer = ViTWorkspace(model: model, batch: o.batch, threads: o.threads, training: false, precision: o.precision)
        let grads = FloatBuffer(count: model.layout.count)
        let masked = FloatBuffer(count: model.layout.count)
        let optimizer = Optimizer(config: OptimizerConfig(), layout: model.layout)
        var cases: [(masks: MaskSet, source: String)] = o.unstructuredSparsities.map { sparsity in
            var config = SparsityConfig()
            config.method = .svite
            config.sparsity = sparsity
            return (config.makeMethod().initialMasks(model: model, seed: 4)!, "ERK")
        }
        if let w = o.weights, let m = w.masks, !m.isStructured { cases.append((m, w.name)) }
        return cases.map { masks, source in
            let sparsity = 1 - masks.density
            masked.pointer.update(from: params.pointer, count: params.count)
            masks.apply(to: masked)
            let train = SparseLayers.choose(model: model, mask: masks.mask.pointer, mode: o.sparseKernels, costs: trainCosts)
            let inference = SparseLayers.choose(model: model, mask: masks.mask.pointer, mode: o.sparseKernels, costs: inferCosts)
            let label = "\(Int((sparsity * 100).rounded()))% unstructured"
            let (step, fwd) = labels.withUnsafeBufferPointer { lab in
                let trainStep = { (sparse: SparseLayers?) in
                    model.forwardBackward(params: masked.pointer, grads: grads.pointer, images: images.pointer, labels: lab.baseAddress!,
                                          smoothing: 0.1, workspace: ws, sparse: sparse)
                    optimizer.step(params: masked.pointer, grads: grads.pointer, lr: 1e-4)
                    masks.apply(to: masked)
                }
                let forward = { (sparse: SparseLayers?) in
                    _ = model.forward(params: masked.pointer, images: images.pointer, labels: lab.baseAddress!, smoothing: 0.1,
                                      workspace: infer, sparse: sparse)
                }
                return (timePair("\(label) train step", { trainStep(nil) }, 3 * flops, { trainStep(train.layers) }, 3 * flops),
                        timePair("\(label) inference", { forward(nil) }, flops, { forward(inference.layers) }, flops))
            }
            let layers = BlockLinear.allCases.map { kind in
                let of = train.choice.layers.filter { $0.site.layer == kind }
                let active = of.reduce(0) { $0 + $1.activeCount }, total = of.reduce(0) { $0 + $1.site.outFeatures * $1.site.inFeatures }
                let costs = of.map { $0.cost ?? trainCosts.cost($0.site, active: $0.activeCount) }
                return UnstructuredRow.Layer(kind: kind.description, density: Double(active) / Double(max(1, total)),
                                             sparseLayers: of.filter(\.sparse).count, layers: of.count,
                                             denseMs: 1000 * costs.reduce(0) { $0 + $1.dense }, sparseMs: 1000 * costs.reduce(0) { $0 + $1.sparse })
            }
            let weights = model.linearSites.reduce(0) { $0 + $1.outFeatures * $1.inFeatures }
            let layoutBytes = train.layers?.bytes ?? 0
            return UnstructuredRow(sparsity: sparsity, masks: source, mode: o.sparseKernels, trainChoice: train.choice.summary,
                                   inferenceChoice: inference.choice.summary, layers: layers,
                                   trainStep: step.variant, denseTrainStep: step.reference, trainSpeedup: 1 / (1 - step.saving),
                                   forward: fwd.variant, denseForward: fwd.reference, forwardSpeedup: 1 / (1 - fwd.saving),
                                   layoutMiB: Double(layoutBytes) / 1_048_576, maskedWeightsMiB: Double(4 * weights) / 1_048_576,
                                   sameComputation: train.layers == nil && inference.layers == nil)
        }
    }
}

extension ModelBenchmark.Result {
    var unstructuredTable: String {
        guard !unstructured.isEmpty else { return "" }
        var lines = ["", "SViTE unstructured masks (ERK unless named), sparse_kernels \(unstructured[0].mode.rawValue), each timed alternately with the same masked model on dense products:",
                     "sparsity  train step ms (dense)   img/s (dense)    speed-up   inference ms (dense)   img/s (dense)    speed-up"]
        for r in unstructured {
            lines.append(String(format: "%7.1f%%  %6.1f (%6.1f)  %7.1f (%7.1f)  %8.2fx  %7.1f (%7.1f)  %7.1f (%7.1f)  %8.2fx", r.sparsity * 100,
                                r.trainStep.medianMs, r.denseTrainStep.medianMs, r.trainStep.imagesPerSecond, r.denseTrainStep.imagesPerSecond,
                                r.trainSpeedup, r.forward.medianMs, r.denseForward.medianMs, r.forward.imagesPerSecond,
                                r.denseForward.imagesPerSecond, r.forwardSpeedup) + (r.masks == "ERK" ? "" : "  masks of \(r.masks)")
                         + (r.sameComputation ? "  (all dense: the same computation, timing noise)" : ""))
        }
        for r in unstructured {
            lines.append("")
            lines.append(String(format: "%.1f%%: training: %@", r.sparsity * 100, r.trainChoice))
            lines.append(String(format: "%.1f%%: inference: %@", r.sparsity * 100, r.inferenceChoice))
            lines.append("  layer       density  sparse  lane ms dense  sparse  speed-up (forward+backward, all blocks, as measured for the choice)")
            for l in r.layers {
                lines.append("  " + l.kind.padding(toLength: 10, withPad: " ", startingAt: 0)
                             + String(format: "  %7.3f  %2d/%-3d  %13.2f  %6.2f  %7.2fx", l.density, l.sparseLayers, l.layers,
                                    l.denseMs, l.sparseMs, l.denseMs / max(l.sparseMs, 1e-9)))
            }
            lines.append(String(format: "  the sparse layouts hold %.1f MiB beside the %.1f MiB of the block layers' dense weights", r.layoutMiB, r.maskedWeightsMiB))
        }
        return "\n" + lines.joined(separator: "\n")
    }
}
