import Compression
import Core
import Model
import Sparsity

/// What one step did to the coordinator's state, as `ServerState.apply` returns it: the
/// optimizer step (on exactly the gradient its optimizer took) and the topology change with
/// the values it gave the grown places. `ModelState.apply` brings a replica from the step's
/// weights to the next step's with it, bit for bit; in a compressing run it is the downlink
/// (the same frame for every worker, encoded once, its size following the merged top-k
/// gradient rather than the model).
public struct ParameterUpdate: Sendable, Equatable {
    /// The weights it applies to are those of step `step`; after it, of step `step + 1`.
    public var step: UInt32
    /// False: the step was skipped (a non-finite gradient), nothing changes but the step.
    public var applied: Bool
    public var lr: Double
    /// The optimizer's update count once this update is made (AdamW's t).
    public var optimizerUpdates: UInt32
    /// AdamW's variance is frozen for this update (freezing is done once, at the first).
    public var freezeVariance: Bool
    /// The frozen variance's factor per tensor (layout order) the optimizer took
    /// (`VarianceTracker`; nil: none).
    public var varianceScale: [Float]?
    /// The gradient is the merged change to the shared estimate (AdamW's first moment,
    /// `TopKFeedback.estimate`), not a gradient for its moving average.
    public var estimate: Bool
    /// Exactly the values the optimizer took (masked and clipped). nil: not kept (a
    /// server whose updates nobody replays, `ServerState.keepsUpdateGradients` off).
    public var gradient: SparseGradient?
    /// How `gradient` travels: fp32, or the codec the server rounded the values it took to
    /// (`ServerState.updateCodec`: bf16, or int8 in the record's own blocks), so fewer bytes
    /// still replay exactly.
    public var gradientCodec: ValueCodec = .fp32
    /// The topology update after the optimizer step (nil: none).
    public var topology: TopologyChange?
    /// CRC-32 of the weights (fp32 bytes, layout order) after the update, every few steps.
    public var checksum: UInt32?

    public init(step: UInt32, applied: Bool, lr: Double, optimizerUpdates: UInt32, freezeVariance: Bool, varianceScale: [Float]? = nil,
                estimate: Bool = false, gradient: SparseGradient?, topology: TopologyChange? = nil, checksum: UInt32? = nil) {
        self.step = step; self.applied = applied; self.lr = lr; self.optimizerUpdates = optimizerUpdates
        self.freezeVariance = freezeVariance; self.varianceScale = varianceScale; self.estimate = estimate
        self.gradient = gradient; self.topology = topology; self.checksum = checksum
    }

    /// A step counted without an update.
    public static func skipped(step: Int, optimizerUpdates: Int, varianceFrozen: Bool) -> ParameterUpdate {
        ParameterUpdate(step: UInt32(step), applied: false, lr: 0, optimizerUpdates: UInt32(optimizerUpdates), freezeVariance: varianceFrozen,
                        gradient: nil)
    }

    /// CRC-32 of `count` weights.
    public static func checksum(_ weights: UnsafePointer<Float>, count: Int) -> UInt32 {
        Checksum.crc32(UnsafeRawBufferPointer(start: weights, count: 4 * count))
    }
}

/// A topology update: per prunable layer, the places switched off and on, and the values
/// each grown place took (its weight, then its value in each of the optimizer's moment
/// buffers, in `Optimizer.stateBuffers` order), taking the masks to `maskVersion`.
public struct TopologyChange: Sendable, Equatable {
    public var maskVersion: UInt32
    public var layers: [Layer]

    public struct Layer: Sendable, Equatable {
        public var off: [UInt32]
        public var on: [UInt32]
        /// The grown places' weights, in `on`'s order.
        public var weights: [Float]
        /// Per moment buffer, the grown places' values in `on`'s order.
        public var moments: [[Float]]
        public init(off: [UInt32], on: [UInt32], weights: [Float] = [], moments: [[Float]] = []) {
            self.off = off; self.on = on; self.weights = weights; self.moments = moments
        }
    }

    public init(maskVersion: UInt32, layers: [Layer]) { self.maskVersion = maskVersion; self.layers = layers }
}

/// What a receiver needs to read an update: its layout, the sizes of its prunable layers
/// and how many moment buffers its optimizer keeps.
public struct UpdateContext: Sendable {
    public var layout: ParameterLayout
    public var layerSizes: [Int]
    public var moments: Int
    public init(layout: ParameterLayout, layerSizes: [Int], moments: Int) {
        self.layout = layout; self.layerSizes = layerSizes; self.moments = moments
    }
}

extension ParameterUpdate {
    // Tagged fields: 1 u32 step, u8 applied, f64 lr, u32 updates, u8 freeze, u8 estimate;
    // 2 u8 codec tag (fp32 or bf16), SparseGradient; 3 topology: u32 mask version, u32 layers, per layer: off,
    // on (IndexCodec), u32 n, n fp32 weights, then per moment buffer n fp32 values;
    // 4 u32 checksum; 5 u32 tensors, fp32 variance scale per tensor.

    public func encode(into w: inout ByteWriter, layout: ParameterLayout) {
        w.field(1) { w in
            w.u32(step); w.u8(applied ? 1 : 0); w.f64(lr); w.u32(optimizerUpdates)
            w.u8(freezeVariance ? 1 : 0); w.u8(estimate ? 1 : 0)
        }
        if let gradient { w.field(2) { $0.u8(gradientCodec.tag); gradient.encode(codec: gradientCodec, layout: layout, into: &$0) } }
        if let topology {
            w.field(3) { w in
                w.u32(topology.maskVersion)
                w.u32(UInt32(topology.layers.count))
                for l in topology.layers {
                    IndexCodec.encode(l.off, into: &w)
                    IndexCodec.encode(l.on, into: &w)
                    w.u32(UInt32(l.on.count))
                    for values in [l.weights] + l.moments {
                        values.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: values.count) }
                    }
                }
            }
        }
        if let checksum { w.field(4) { $0.u32(checksum) } }
        if let varianceScale {
            w.field(5) { w in
                w.u32(UInt32(varianceScale.count))
                varianceScale.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: varianceScale.count) }
            }
        }
    }

    /// Reads an update for `context`; every place, count and value is checked.
    public static func decode(_ r: inout ByteReader, context c: UpdateContext) throws -> ParameterUpdate {
        var u: ParameterUpdate?
        try r.fields("update") { tag, r in
            if tag != 1 && u == nil { throw WireError.malformedPayload("update field \(tag) before its header") }
            switch tag {
            case 1:
                let step = try r.u32("update step"), applied = try r.u8("update applied") != 0
                let lr = try r.f64("update lr")
                guard lr.isFinite, lr >= 0 else { throw WireError.malformedPayload("update lr \(lr)") }
                u = ParameterUpdate(step: step, applied: applied, lr: lr, optimizerUpdates: try r.u32("optimizer updates"),
                                    freezeVariance: try r.u8("update freeze") != 0, estimate: try r.u8("update estimate") != 0, gradient: nil)
            case 2:
                let codec = try ValueCodec.read(&r, "update gradient codec")
                let g = try SparseGradient.decode(&r, codec: codec, layout: c.layout)
                guard g.isFinite else { throw WireError.nonFinite("update gradient") }
                u?.gradient = g
                u?.gradientCodec = codec
            case 3:
                u?.topology = try decodeTopology(&r, context: c)
            case 4:
                u?.checksum = try r.u32("weights checksum")
            case 5:
                let n = Int(try r.u32("variance scales"))
                guard n == c.layout.tensors.count else { throw WireError.malformedPayload("\(n) variance scales, this layout has \(c.layout.tensors.count) tensors") }
                let v = try r.floatArray(n, "variance scales")
                guard v.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw WireError.nonFinite("variance scales") }
                u?.varianceScale = v
            default:
                throw WireError.malformedPayload("update field \(tag) (another svite version's)")
            }
        }
        guard let u else { throw WireError.malformedPayload("an update without its header") }
        return u
    }

    static func decodeTopology(_ r: inout ByteReader, context c: UpdateContext) throws -> TopologyChange {
        let version = try r.u32("update mask version")
        let n = Int(try r.u32("update mask layers"))
        guard n == c.layerSizes.count else { throw WireError.malformedPayload("topology for \(n) layers, this model has \(c.layerSizes.count)") }
        let layers = try c.layerSizes.map { size in
            let off = try IndexCodec.decode(&r, bound: UInt32(size), maxCount: size)
            let on = try IndexCodec.decode(&r, bound: UInt32(size), maxCount: size)
            let count = Int(try r.u32("grown values"))
            guard count == on.count else { throw WireError.malformedPayload("\(count) grown values for \(on.count) grown weights") }
            let weights = try r.floatArray(count, "grown weights")
            let moments = try (0 ..< c.moments).map { _ in try r.floatArray(count, "grown moments") }
            guard weights.allSatisfy(\.isFinite), moments.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw WireError.nonFinite("grown weights") }
            return TopologyChange.Layer(off: off, on: on, weights: weights, moments: moments)
        }
        return TopologyChange(maskVersion: version, layers: layers)
    }
}
