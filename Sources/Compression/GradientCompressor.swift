import Core
import Kernels
import Model
import Sparsity

/// How one step's gradient goes on the wire. The step's order names it; a worker's
/// `GradientEncoder` runs the compressor it names. A new compressor is a case here, a
/// `GradientCompressor` and a line in `GradientEncoder.compressor(for:)`: nothing outside
/// this module changes (the order's wire code and the coordinator's decoder are here too).
public enum GradientCompression: Sendable, Equatable {
    /// Every active value, in the run's codec for uncompressed steps (`--gradient-codec`).
    case dense
    /// The top k of the gradient plus this worker's residual (error feedback), k the
    /// density of each tensor's active weights.
    case topK(density: Double)
    /// The top k of this worker's momentum against the shared estimate (`TopKFeedback.estimate`).
    case estimate(density: Double)

    /// The fraction of the active values sent (nil: all).
    public var density: Double? {
        switch self {
        case .dense: nil
        case let .topK(d), let .estimate(d): d
        }
    }

    /// Whether the merged gradient is a change to the shared estimate, not a gradient.
    public var movesEstimate: Bool { if case .estimate = self { true } else { false } }

    // u8 kind (0 dense, 1 top-k, 2 estimate), [f64 density]

    /// The byte that names the kind on the wire (and a compressor in `GradientEncoder`).
    public var kind: UInt8 {
        switch self {
        case .dense: 0
        case .topK: 1
        case .estimate: 2
        }
    }

    public func encode(into w: inout ByteWriter) {
        w.u8(kind)
        if let d = density { w.f64(d) }
    }

    public static func decode(_ r: inout ByteReader) throws -> GradientCompression {
        let kind = try r.u8("compression kind")
        guard kind != 0 else { return .dense }
        let d = try r.f64("gradient density")
        guard d > 0 && d <= 1 else { throw WireError.malformedPayload("gradient density \(d)") }
        switch kind {
        case 1: return .topK(density: d)
        case 2: return .estimate(density: d)
        default: throw WireError.malformedPayload("compression kind \(kind)")
        }
    }
}

/// What a compressor may read besides the gradient: the worker's replica.
public struct CompressionContext {
    public var masks: MaskSet?
    /// AdamW's variance of the replica once it has one (nil: none, or SGD).
    public var variance: UnsafePointer<Float>?
    /// The frozen variance's factor per tensor the last update took (nil: none).
    public var varianceScale: [Float]?
    /// The shared estimate: the replica's first moment (nil: the worker holds no replica).
    public var estimate: UnsafePointer<Float>?
    /// The step's codec for every value, when its order names one (nil: the run's).
    public var denseCodec: ValueCodec?
    public init(masks: MaskSet?, variance: UnsafePointer<Float>? = nil, varianceScale: [Float]? = nil, estimate: UnsafePointer<Float>? = nil,
                denseCodec: ValueCodec? = nil) {
        self.masks = masks; self.variance = variance; self.varianceScale = varianceScale; self.estimate = estimate
        self.denseCodec = denseCodec
    }
}

/// A worker's uplink for one kind of step: it writes the gradient as `GradientValues`
/// and keeps whatever state it carries across steps (a residual, a momentum).
public protocol GradientCompressor: AnyObject {
    /// Writes `gradient` (full layout; the compressor may change it) for a step of `compression`.
    func encode(_ gradient: UnsafeMutablePointer<Float>, _ compression: GradientCompression, context: CompressionContext,
                into w: inout ByteWriter) throws
    /// After a topology change: state on inactive weights is dropped.
    func follow(_ masks: MaskSet, estimate: UnsafePointer<Float>?)
    /// Forgets the state carried across steps (a rejoin or a resync).
    func reset()
}

/// The run's compression choices (its `communication:` and optimizer sections), resolved
/// once from the config (`CommunicationConfig.compressionSpec`).
public struct CompressionSpec: Sendable, Equatable {
    /// The codec of uncompressed steps (`--gradient-codec`).
    public var denseCodec: ValueCodec
    /// What top-k selects and the codec its values take (`communication.values`).
    public var topK: TopKSettings
    public var rankBy: TopKRank
    /// optimizer.clip_grad_norm: with the estimate, each worker clips its own gradient
    /// before its momentum takes it (the coordinator sees only changes).
    public var clipGradNorm: Double
    /// AdamW's β1, the momentum of the estimate's workers.
    public var beta1: Float
    public init(denseCodec: ValueCodec = .fp32, topK: TopKSettings = TopKSettings(), rankBy: TopKRank = .update,
                clipGradNorm: Double = 0, beta1: Float = 0.9) {
        self.denseCodec = denseCodec; self.topK = topK; self.rankBy = rankBy; self.clipGradNorm = clipGradNorm; self.beta1 = beta1
    }
}

/// A worker's compressors, built once from the spec, each made when a step first names it.
public final class GradientEncoder {
    public let spec: CompressionSpec
    public let layout: ParameterLayout
    private var made: [UInt8: any GradientCompressor] = [:]

    public init(spec: CompressionSpec, layout: ParameterLayout) { self.spec = spec; self.layout = layout }

    func compressor(for c: GradientCompression) -> any GradientCompressor {
        if let m = made[c.kind] { return m }
        let new: any GradientCompressor = switch c {
        case .dense: DenseCompressor(spec: spec, layout: layout)
        case .topK: TopKCompressor(layout: layout, spec: spec)
        case .estimate: EstimateCompressor(layout: layout, spec: spec)
        }
        made[c.kind] = new
        return new
    }

    public func encode(_ gradient: UnsafeMutablePointer<Float>, _ c: GradientCompression, context: CompressionContext,
                       into w: inout ByteWriter) throws {
        var ctx = context
        // Ranked by the step each entry would make (a scalar bias correction does not
        // change the order within a tensor), or by magnitude.
        if spec.rankBy != .update { ctx.variance = nil }
        try compressor(for: c).encode(gradient, c, context: ctx, into: &w)
    }

    /// After a topology change: pruned weights drop their residual; grown ones start from
    /// zero (or from the estimate).
    public func follow(_ masks: MaskSet, estimate: UnsafePointer<Float>?) {
        for c in made.values { c.follow(masks, estimate: estimate) }
    }

    /// A (re)join starts from the coordinator's weights: what was left unsent belongs to
    /// steps the coordinator has finished without it.
    public func reset() { for c in made.values { c.reset() } }
}

/// Every active value (a sparse run packs them; both sides know the mask). A codec that
/// needs feedback (int8) adds what the last step rounded off before it rounds, and keeps
/// what this step rounds off: the rounding is delayed, not lost.
public final class DenseCompressor: GradientCompressor {
    let codec: ValueCodec
    let packed: FloatBuffer
    let count: Int
    /// What int8 steps rounded off, full layout (allocated by the first).
    private(set) var residual: FloatBuffer?
    public init(spec: CompressionSpec, layout: ParameterLayout) {
        codec = spec.denseCodec; count = layout.count; packed = FloatBuffer(count: layout.count)
    }
    public func encode(_ gradient: UnsafeMutablePointer<Float>, _ compression: GradientCompression, context: CompressionContext,
                       into w: inout ByteWriter) throws {
        let codec = context.denseCodec ?? self.codec
        let feedback = codec.needsFeedback ? (residual ?? FloatBuffer(count: count)) : nil
        residual = feedback
        // Inactive weights hold no gradient, and (after `follow`) no residual.
        if let r = feedback?.pointer { VectorOps.accumulate(gradient, r, count) }
        let values: UnsafeMutablePointer<Float>, n: Int
        if let m = context.masks {
            m.pack(gradient, into: packed.pointer)
            (values, n) = (packed.pointer, m.packedCount)
        } else {
            (values, n) = (gradient, count)
        }
        GradientValues.encodeDense(values, count: n, codec: codec, into: &w)
        guard let r = feedback?.pointer else { return }
        // residual = sent − what the receiver decodes (the gradient's buffer is ours to change).
        if let m = context.masks {
            let sent = r
            m.unpack(values, into: sent)
            codec.roundTrip(values, count: n)
            m.unpack(values, into: gradient)
            for i in 0 ..< count { sent[i] -= gradient[i] }
        } else {
            r.update(from: values, count: n)
            codec.roundTrip(values, count: n)
            for i in 0 ..< n { r[i] -= values[i] }
        }
    }
    public func follow(_ masks: MaskSet, estimate: UnsafePointer<Float>?) {
        if let residual { masks.apply(to: residual) }
    }
    public func reset() { residual?.zero() }
}

extension TopKCompressor: GradientCompressor {
    public convenience init(layout: ParameterLayout, spec: CompressionSpec) {
        self.init(layout: layout)
        settings = spec.topK
    }
    public func encode(_ gradient: UnsafeMutablePointer<Float>, _ compression: GradientCompression, context: CompressionContext,
                       into w: inout ByteWriter) throws {
        let sparse = compress(gradient, mask: context.masks, density: compression.density ?? 1, settings: settings,
                              variance: context.variance, tensorScale: context.varianceScale)
        GradientValues.encodeSparse(sparse, codec: settings.codec, layout: layout, into: &w)
    }
    public func follow(_ masks: MaskSet, estimate: UnsafePointer<Float>?) { follow(masks) }
}

extension EstimateCompressor: GradientCompressor {
    public convenience init(layout: ParameterLayout, spec: CompressionSpec) {
        self.init(layout: layout)
        self.spec = spec
    }
    public func encode(_ gradient: UnsafeMutablePointer<Float>, _ compression: GradientCompression, context: CompressionContext,
                       into w: inout ByteWriter) throws {
        guard let estimate = context.estimate else {
            throw WireError.malformedPayload("a step asks for top-k against the shared estimate, but this worker holds no replica of the optimizer (communication.downlink weights)")
        }
        if spec.clipGradNorm > 0 { GradientClipping.clip(gradient, count: layout.count, maxNorm: spec.clipGradNorm) }
        let sparse = compress(gradient, estimate: estimate, beta: spec.beta1, mask: context.masks, density: compression.density ?? 1,
                              settings: spec.topK, variance: context.variance, tensorScale: context.varianceScale)
        GradientValues.encodeSparse(sparse, codec: spec.topK.codec, layout: layout, into: &w)
    }
}

/// The values of a gradient frame: every (active) value, or top-k entries over the layout.
// u8 form (0 every value, 1 top-k entries), u8 codec tag, then u32 n and n values, or a
// SparseGradient for the layout.
public enum GradientValues {
    public static func encodeDense(_ values: UnsafePointer<Float>, count: Int, codec: ValueCodec, into w: inout ByteWriter) {
        w.u8(0); w.u8(codec.tag)
        w.u32(UInt32(count))
        codec.encode(values, count: count, into: &w)
    }

    public static func encodeSparse(_ sparse: SparseGradient, codec: ValueCodec, layout: ParameterLayout, into w: inout ByteWriter) {
        w.u8(1); w.u8(codec.tag)
        sparse.encode(codec: codec, layout: layout, into: &w)
    }

    /// Reads the values: `count` of them (the receiver's expectation) into `out`, or the
    /// top-k entries for `layout`, returned.
    public static func decode(_ r: inout ByteReader, into out: UnsafeMutablePointer<Float>, count: Int,
                              layout: ParameterLayout?) throws -> SparseGradient? {
        let form = try r.u8("gradient form")
        let codec = try ValueCodec.read(&r, "value codec")
        switch form {
        case 0:
            let n = Int(try r.u32("value count"))
            guard n == count else { throw WireError.malformedPayload("\(n) values, expected \(count)") }
            try codec.decode(&r, into: out, count: count)
            return nil
        case 1:
            guard let layout else { throw WireError.malformedPayload("top-k values where every value was expected") }
            return try SparseGradient.decode(&r, codec: codec, layout: layout)
        default:
            throw WireError.malformedPayload("gradient form \(form)")
        }
    }
}

/// `communication.rank_by`: which entries of a tensor are the k "largest".
public enum TopKRank: String, Sendable, Codable, CaseIterable, ConfigChoice {
    /// The step each would make: |g| / (√v + ε) with AdamW's variance v from the worker's
    /// replica (the replicated downlink), so a weight whose gradients are small but steady
    /// is not starved by a noisy neighbour's; |g| without a replica or with SGD.
    case update
    /// |g|, as Deep Gradient Compression.
    case gradient
}

extension TopKFeedback {
    /// The compression of a step at `density` under this feedback.
    public func compression(density: Double) -> GradientCompression {
        switch self {
        case .residual: .topK(density: density)
        case .estimate: .estimate(density: density)
        }
    }
}

/// `communication.feedback`: what keeps the part of a worker's gradient that top-k leaves out.
public enum TopKFeedback: String, Sendable, Codable, CaseIterable, ConfigChoice {
    /// Error feedback (EF-SGD, Deep Gradient Compression): each worker adds its gradient to
    /// what it has not sent yet and sends the k largest; an entry's gradient waits in the
    /// residual until it is large enough, about 1/density steps for a typical entry.
    case residual
    /// A shared estimate of the momentum (EF21-SGDM with one estimate for all): each worker
    /// keeps its own momentum of its gradients and sends the k largest differences between
    /// it and the estimate G, which the coordinator and every replica hold alike
    /// (AdamW's first moment); G moves by the merged differences, and every weight takes a
    /// step from G every step, so an unsent entry moves with its last known momentum
    /// instead of waiting. An unsent entry's estimate is off by at most the worker's k-th
    /// largest difference, and it keeps the noise of the step that last sent it: on the
    /// reference recipe (crop and flip, noisier steps) it lost 0.6 and 2.0 pt to
    /// uncompressed where the residual lost 0.15 and 0.8, so it is not the default
    /// (docs/benchmarks.md). On a sparse run it also leaves grown weights untrained: a
    /// grown weight's estimate starts at zero, and one whose momentum stays within the
    /// threshold of it is never sent (27-35% of the default run's active weights ended at
    /// exactly zero; the residual left 3%).
    case estimate
}

