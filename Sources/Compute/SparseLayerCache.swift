import Kernels
import Logging
import Model
import Sparsity

/// A replica's or evaluator's sparse block layers: chosen and laid out from the mask when
/// the mask changes (a topology update, a resume, a join), and not otherwise. Says what it
/// chose when the choice changes.
final class SparseLayerCache {
    let model: ViTModel
    let mode: SparseKernelMode
    let costs: MeasuredLayerCosts
    let log: Logger?
    /// What the passes are, for the log: "training" or "evaluation".
    let purpose: String
    private var built: (masks: MaskSet, edits: Int, layers: SparseLayers?)?
    private(set) var choice: SparseKernelChoice?

    /// batch: the largest batch a pass takes; threads: the pass's.
    init(model: ViTModel, mode: SparseKernelMode, batch: Int, threads: Int, precision: Precision, training: Bool, log: Logger?) {
        self.model = model
        self.mode = mode
        self.log = log
        purpose = training ? "training" : "evaluation"
        costs = MeasuredLayerCosts(model: model, batch: batch, threads: threads, precision: precision, training: training)
    }

    /// The sparse layers for `masks` (nil: no unstructured mask, or none chosen).
    func layers(for masks: MaskSet?) -> SparseLayers? {
        guard let masks, !masks.isStructured, mode != .off else { return nil }
        if let b = built, b.masks === masks, b.edits == masks.edits { return b.layers }
        let (choice, layers) = SparseLayers.choose(model: model, mask: masks.mask.pointer, mode: mode, costs: costs)
        if choice.sparseSites != self.choice?.sparseSites || self.choice == nil {
            log?.info("\(purpose): \(choice.summary)")
            log?.debug("\(purpose): sparse layers by kind: \(choice.byKind)")
        }
        self.choice = choice
        built = (masks, masks.edits, layers)
        return layers
    }
}
