import Core
import Kernels

/// One of a block's four prunable linear layers.
public enum BlockLinear: Int, CaseIterable, Sendable, CustomStringConvertible {
    case qkv, proj, fc1, fc2

    public var description: String {
        switch self {
        case .qkv: "attn.qkv"
        case .proj: "attn.proj"
        case .fc1: "mlp.fc1"
        case .fc2: "mlp.fc2"
        }
    }
}

/// Where a block's prunable linear layer lives in the parameter layout, and its shape.
public struct LinearSite: Sendable, Hashable, CustomStringConvertible {
    public let block: Int
    public let layer: BlockLinear
    /// Offsets of the weight (O, I) and the bias (O).
    public let weight: Int
    public let bias: Int
    public let outFeatures: Int
    public let inFeatures: Int

    public var description: String { "blocks.\(block).\(layer)" }
}

extension ViTModel {
    /// Block `l`'s layer `layer`: y = x·Wᵀ + b, W (O, I).
    public func site(block l: Int, _ layer: BlockLinear) -> LinearSite {
        let w = offsets.blocks[l], d = config.dim, a = config.attentionWidth(inBlock: l), hid = config.hidden(inBlock: l)
        switch layer {
        case .qkv: return LinearSite(block: l, layer: layer, weight: w.qkvWeight, bias: w.qkvBias, outFeatures: 3 * a, inFeatures: d)
        case .proj: return LinearSite(block: l, layer: layer, weight: w.projWeight, bias: w.projBias, outFeatures: d, inFeatures: a)
        case .fc1: return LinearSite(block: l, layer: layer, weight: w.fc1Weight, bias: w.fc1Bias, outFeatures: hid, inFeatures: d)
        case .fc2: return LinearSite(block: l, layer: layer, weight: w.fc2Weight, bias: w.fc2Bias, outFeatures: d, inFeatures: hid)
        }
    }

    /// Every block's prunable linear layers, in block order.
    public var linearSites: [LinearSite] {
        (0 ..< config.depth).flatMap { l in BlockLinear.allCases.map { site(block: l, $0) } }
    }
}

/// The block layers a pass computes on sparse kernels, each with its layout built from the
/// mask. The layouts change only with the mask; the values are taken from the parameters
/// at the start of every pass (`gather`), O(active weights).
public final class SparseLayers {
    public let model: ViTModel
    /// Indexed by block · 4 + layer; nil where the layer runs dense.
    private var weights: [SparseWeight?]
    /// The most active weights of one sparse layer (a lane's weight-gradient scratch).
    public let maxActive: Int

    /// `layouts`: the layers to run sparse, each with its layout (see `layout(_:mask:)`).
    public init(model: ViTModel, layouts: [(site: LinearSite, weight: SparseWeight)]) {
        self.model = model
        var w = [SparseWeight?](repeating: nil, count: model.config.depth * BlockLinear.allCases.count)
        for (site, weight) in layouts {
            precondition(weight.outFeatures == site.outFeatures && weight.inFeatures == site.inFeatures,
                         "SparseLayers: \(site)'s layout is \(weight.outFeatures)x\(weight.inFeatures)")
            w[site.block * BlockLinear.allCases.count + site.layer.rawValue] = weight
        }
        weights = w
        maxActive = layouts.map(\.weight.activeCount).max() ?? 0
    }

    /// The layout of `site` under `mask` (the full parameter layout, nonzero = active).
    public static func layout(_ site: LinearSite, mask: UnsafePointer<Float>) -> SparseWeight {
        SparseWeight(mask: mask + site.weight, outFeatures: site.outFeatures, inFeatures: site.inFeatures)
    }

    /// The choice for `mask` (the full parameter layout, nonzero = active) and the layers it
    /// runs sparse (nil: none).
    public static func choose(model: ViTModel, mask: UnsafePointer<Float>, mode: SparseKernelMode,
                              costs: MeasuredLayerCosts) -> (choice: SparseKernelChoice, layers: SparseLayers?) {
        let active = model.linearSites.map { s in
            (site: s, activeCount: (0 ..< s.outFeatures * s.inFeatures).reduce(0) { $0 + (mask[s.weight + $1] != 0 ? 1 : 0) })
        }
        let choice = SparseKernelChoice(mode: mode, active: active) { costs.cost($0, active: $1) }
        let sites = choice.sparseSites
        return (choice, sites.isEmpty ? nil : SparseLayers(model: model, layouts: sites.map { ($0, layout($0, mask: mask)) }))
    }

    /// The layers that run sparse, in block order.
    public var sites: [LinearSite] {
        model.linearSites.filter { weight(block: $0.block, $0.layer) != nil }
    }

    public var isEmpty: Bool { weights.allSatisfy { $0 == nil } }

    /// What the layouts hold.
    public var bytes: Int { weights.reduce(0) { $0 + ($1?.bytes ?? 0) } }

    func weight(block l: Int, _ layer: BlockLinear) -> SparseWeight? {
        weights[l * BlockLinear.allCases.count + layer.rawValue]
    }

    /// Takes every sparse layer's active values from the parameters (before each pass).
    public func gather(_ params: UnsafePointer<Float>) {
        for l in 0 ..< model.config.depth {
            for layer in BlockLinear.allCases where weights[l * 4 + layer.rawValue] != nil {
                weights[l * 4 + layer.rawValue]!.gather(from: params + model.site(block: l, layer).weight)
            }
        }
    }
}

extension ViTModel {
    /// y: (R, O) ← [residual: (R, O) +] x: (R, I)·Wᵀ + b for block `l`'s `layer`, on its
    /// sparse layout when `sparse` has one, else as a dense product in `mode`.
    func linearForward(_ layer: BlockLinear, block l: Int, y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                       residual: UnsafePointer<Float>? = nil, params P: UnsafePointer<Float>, rows: Int,
                       mode: MatMulMode, sparse: SparseLayers?, threads: Int) {
        let s = site(block: l, layer)
        if let w = sparse?.weight(block: l, layer) {
            SparseLinear.forwardRows(y: y, x: x, bias: P + s.bias, residual: residual, weight: w, rows: rows, threads: threads)
        } else if let residual {
            Linear.forwardResidual(y: y, residual: residual, x: x, weight: P + s.weight, bias: P + s.bias,
                                   rows: rows, inFeatures: s.inFeatures, outFeatures: s.outFeatures, mode: mode)
        } else {
            Linear.forward(y: y, x: x, weight: P + s.weight, bias: P + s.bias,
                           rows: rows, inFeatures: s.inFeatures, outFeatures: s.outFeatures, mode: mode)
        }
    }

    /// dx: (R, I) += dy·W, ∂L/∂W and ∂L/∂b added into G, for block `l`'s `layer`. On a sparse
    /// layout ∂L/∂W is computed at the active entries only (the rest of G is left as it
    /// is) unless `fullWeightGradient`, when it is the dense product (a step whose update
    /// ranks inactive weights by their gradient). `scratch` holds `sparse.maxActive` floats.
    func linearBackward(_ layer: BlockLinear, block l: Int, dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                        x: UnsafePointer<Float>, params P: UnsafePointer<Float>, grads G: UnsafeMutablePointer<Float>,
                        rows: Int, mode: MatMulMode, sparse: SparseLayers?, fullWeightGradient: Bool,
                        scratch: UnsafeMutablePointer<Float>?, threads: Int) {
        let s = site(block: l, layer)
        guard let w = sparse?.weight(block: l, layer) else {
            Linear.backward(dx: dx, dweight: G + s.weight, dbias: G + s.bias, dy: dy, x: x, weight: P + s.weight,
                            rows: rows, inFeatures: s.inFeatures, outFeatures: s.outFeatures, mode: mode)
            return
        }
        if fullWeightGradient {
            SparseLinear.backwardRows(dx: dx, dvalues: nil, dbias: G + s.bias, dy: dy, x: x, weight: w, rows: rows, threads: threads)
            Linear.backward(dx: nil, dweight: G + s.weight, dbias: nil, dy: dy, x: x, weight: P + s.weight,
                            rows: rows, inFeatures: s.inFeatures, outFeatures: s.outFeatures, mode: mode)
            return
        }
        guard let scratch else { preconditionFailure("linearBackward: a sparse layer needs the lane's scratch") }
        let nnz = w.activeCount
        VectorOps.zero(scratch, nnz)
        SparseLinear.backwardRows(dx: dx, dvalues: scratch, dbias: G + s.bias, dy: dy, x: x, weight: w, rows: rows, threads: threads)
        // Scatter the CSR-ordered values into the dense (O, I) gradient.
        let dW = G + s.weight
        w.withLines { byRow, _ in
            for o in 0 ..< s.outFeatures {
                let row = dW + o * s.inFeatures
                for e in Int(byRow.start[o]) ..< Int(byRow.start[o + 1]) { row[Int(byRow.index[e])] += scratch[e] }
            }
        }
    }
}
