import Compression
import Core
import Model
import Sparsity

/// The downlink of a compressing run: instead of the weights, the update the coordinator
/// applied, which every worker applies to its own replica of the weights, the optimizer's
/// moments and the masks with the same code, so the replicas stay equal bit for bit. The
/// frame is the same for every worker and is encoded once; its size follows the merged
/// top-k gradient, not the model.
///
/// Order of a replay (as `ServerState.apply`): freeze the variance if asked, the optimizer
/// step on `gradient` (already masked and clipped: what the coordinator's optimizer took),
/// the old mask on the weights, then the topology change: pruned places zeroed with their
/// moments, grown places set to `grown`.
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
    /// Exactly the values the coordinator's optimizer took, fp32.
    public var gradient: SparseGradient
    /// The topology update after the optimizer step, to mask version `maskVersion`.
    public var maskVersion: UInt32
    public var topology: [MaskUpdate.LayerChange]?
    /// Per prunable layer with a change: for its `on` places in order, the weights, then
    /// each moment buffer's values (the optimizer's `stateBuffers` order).
    public var grown: [[Float]]
    /// CRC-32 of the weights (fp32 bytes, layout order) after the update, every few steps.
    public var checksum: UInt32?
    /// The frozen variance's factor per tensor (layout order) the optimizer took
    /// (`VarianceTracker`; nil: none).
    public var varianceScale: [Float]? = nil
    /// The gradient is the merged change to the shared estimate (AdamW's first moment,
    /// `TopKFeedback.estimate`), not a gradient for its moving average.
    public var estimate = false

    public init(step: UInt32, applied: Bool, lr: Double, optimizerUpdates: UInt32, freezeVariance: Bool, gradient: SparseGradient,
                maskVersion: UInt32 = 0, topology: [MaskUpdate.LayerChange]? = nil, grown: [[Float]] = [], checksum: UInt32? = nil) {
        self.step = step; self.applied = applied; self.lr = lr; self.optimizerUpdates = optimizerUpdates
        self.freezeVariance = freezeVariance; self.gradient = gradient; self.maskVersion = maskVersion
        self.topology = topology; self.grown = grown; self.checksum = checksum
    }

    /// CRC-32 of `count` weights.
    public static func checksum(_ weights: UnsafePointer<Float>, count: Int) -> UInt32 {
        Checksum.crc32(UnsafeRawBufferPointer(start: weights, count: 4 * count))
    }

    // u32 step, u8 flags (1 applied, 2 freeze, 4 topology, 8 checksum, 16 variance scale,
    // 32 estimate),
    // f64 lr, u32 updates, SparseGradient (fp32), [topology: u32 mask version, u32 layers,
    // per layer: off, on (IndexCodec), u32 n, n fp32 grown values], [u32 checksum],
    // [u32 tensors, fp32 scale per tensor]

    func encode(into w: inout ByteWriter, layout: ParameterLayout) {
        w.u32(step)
        w.u8((applied ? 1 : 0) | (freezeVariance ? 2 : 0) | (topology != nil ? 4 : 0) | (checksum != nil ? 8 : 0)
            | (varianceScale != nil ? 16 : 0) | (estimate ? 32 : 0))
        w.f64(lr)
        w.u32(optimizerUpdates)
        gradient.encode(codec: .fp32, layout: layout, into: &w)
        if let topology {
            w.u32(maskVersion)
            w.u32(UInt32(topology.count))
            for (l, values) in zip(topology, grown + Array(repeating: [], count: max(0, topology.count - grown.count))) {
                IndexCodec.encode(l.off, into: &w)
                IndexCodec.encode(l.on, into: &w)
                w.u32(UInt32(values.count))
                values.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: values.count) }
            }
        }
        if let checksum { w.u32(checksum) }
        if let varianceScale {
            w.u32(UInt32(varianceScale.count))
            varianceScale.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: varianceScale.count) }
        }
    }

    /// Reads an update for `layout` whose prunable layers have `layerSizes` weights and
    /// whose optimizer keeps `moments` buffers; every place and count is checked.
    static func decode(_ r: inout ByteReader, layout: ParameterLayout, layerSizes: [Int], moments: Int) throws -> ParameterUpdate {
        let step = try r.u32("update step")
        let flags = try r.u8("update flags")
        guard flags & ~63 == 0 else { throw WireError.malformedPayload("update flags \(flags)") }
        let lr = try r.f64("update lr")
        guard lr.isFinite, lr >= 0 else { throw WireError.malformedPayload("update lr \(lr)") }
        let updates = try r.u32("optimizer updates")
        let gradient = try SparseGradient.decode(&r, codec: .fp32, layout: layout)
        guard gradient.isFinite else { throw WireError.nonFinite("update gradient") }
        var u = ParameterUpdate(step: step, applied: flags & 1 != 0, lr: lr, optimizerUpdates: updates, freezeVariance: flags & 2 != 0,
                                gradient: gradient)
        u.estimate = flags & 32 != 0
        if flags & 4 != 0 {
            u.maskVersion = try r.u32("update mask version")
            let n = Int(try r.u32("update mask layers"))
            guard n == layerSizes.count else { throw WireError.malformedPayload("topology for \(n) layers, this model has \(layerSizes.count)") }
            var layers: [MaskUpdate.LayerChange] = [], grown: [[Float]] = []
            for size in layerSizes {
                let off = try IndexCodec.decode(&r, bound: UInt32(size), maxCount: size)
                let on = try IndexCodec.decode(&r, bound: UInt32(size), maxCount: size)
                let count = Int(try r.u32("grown values"))
                guard count == on.count * (1 + moments) else {
                    throw WireError.malformedPayload("\(count) grown values for \(on.count) grown weights and \(moments) moments")
                }
                var v = [Float](repeating: 0, count: count)
                try v.withUnsafeMutableBufferPointer { p in if count > 0 { try r.floats(into: p.baseAddress!, count: count) } }
                guard v.allSatisfy(\.isFinite) else { throw WireError.nonFinite("grown weights") }
                layers.append(MaskUpdate.LayerChange(off: off, on: on)); grown.append(v)
            }
            u.topology = layers; u.grown = grown
        }
        if flags & 8 != 0 { u.checksum = try r.u32("weights checksum") }
        if flags & 16 != 0 {
            let n = Int(try r.u32("variance scales"))
            guard n == layout.tensors.count else { throw WireError.malformedPayload("\(n) variance scales, this layout has \(layout.tensors.count) tensors") }
            var v = [Float](repeating: 0, count: n)
            try v.withUnsafeMutableBufferPointer { try r.floats(into: $0.baseAddress!, count: n) }
            guard v.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw WireError.nonFinite("variance scales") }
            u.varianceScale = v
        }
        return u
    }
}

/// One worker's share in a broadcast step frame.
public struct RankAssignment: Sendable, Equatable {
    public var rank: UInt32
    public var assignment: Assignment
    public init(rank: UInt32, assignment: Assignment) { self.rank = rank; self.assignment = assignment }
}
