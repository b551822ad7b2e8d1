import Core
import Kernels
import Model

// How a request and its reply travel. They sit beside the method types so that a new
// kind of request is a change to this module only: the step order and the gradient frame
// carry them as opaque fields.

extension StepRequest {
    // u8 kind: 0 none; 1 grow candidates: u32 multiplier, u32 layers, u32 k per layer;
    // 2 unit scores: u64 seed.

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .none:
            w.u8(0)
        case let .growCandidates(multiplier, perLayer):
            w.u8(1)
            w.u32(UInt32(clamping: multiplier))
            w.u32(UInt32(perLayer.count))
            for k in perLayer { w.u32(UInt32(clamping: k)) }
        case let .unitScores(seed):
            w.u8(2)
            w.u64(seed)
        }
    }

    /// Reads a request for a model of at most `maxLayers` prunable layers.
    public static func decode(_ r: inout ByteReader, maxLayers: Int) throws -> StepRequest {
        let kind = try r.u8("request kind")
        switch kind {
        case 0:
            return .none
        case 1:
            let c = Int(try r.u32("candidate multiplier"))
            let n = Int(try r.u32("candidate layers"))
            guard n <= maxLayers else { throw WireError.malformedPayload("\(n) candidate layers, at most \(maxLayers)") }
            return .growCandidates(multiplier: c, perLayer: try (0 ..< n).map { _ in Int(try r.u32("candidate k")) })
        case 2:
            return .unitScores(seed: try r.u64("unit score seed"))
        default:
            throw WireError.malformedPayload("request kind \(kind)")
        }
    }
}

/// The reply a receiver accepts: what it asked for, with the shapes it knows.
public enum ExpectedReply: Sendable, Equatable {
    case none
    /// Grow candidates for layers of these sizes (indices are bounded by them).
    case growCandidates(layerSizes: [Int])
    /// This many unit scores.
    case unitScores(count: Int)
}

extension StepRequest {
    /// What a reply to this request looks like for `model` under `masks`.
    public func expectedReply(masks: MaskSet?, model: ViTConfig) -> ExpectedReply {
        switch self {
        case .none: .none
        case .growCandidates: .growCandidates(layerSizes: masks?.prunable.map(\.count) ?? [])
        case .unitScores: .unitScores(count: UnitScores.count(config: model))
        }
    }
}

extension StepReply {
    // u8 kind: 0 none; 1 grow candidates: u32 layers, per layer: indices (delta varints),
    // fp32 values; 2 unit scores: u32 n, fp32 values.

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .none:
            w.u8(0)
        case let .growCandidates(candidates):
            w.u8(1)
            w.u32(UInt32(candidates.count))
            for c in candidates {
                IndexCodec.encode(c.indices, into: &w)
                c.values.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: c.values.count) }
            }
        case let .unitScores(scores):
            w.u8(2)
            w.u32(UInt32(scores.count))
            scores.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: scores.count) }
        }
    }

    /// Reads a reply, which must be the one `expecting` names, with finite values.
    public static func decode(_ r: inout ByteReader, expecting: ExpectedReply) throws -> StepReply {
        let kind = try r.u8("reply kind")
        switch (kind, expecting) {
        case (0, .none):
            return .none
        case let (2, .unitScores(expected)):
            let n = Int(try r.u32("unit score count"))
            guard n == expected, n > 0 else { throw WireError.malformedPayload("\(n) unit scores, expected \(expected)") }
            let v = try r.floatArray(n, "unit scores")
            guard v.allSatisfy(\.isFinite) else { throw WireError.nonFinite("unit scores") }
            return .unitScores(v)
        case let (1, .growCandidates(layerSizes)):
            let layers = Int(try r.u32("candidate layers"))
            guard layers == layerSizes.count else { throw WireError.malformedPayload("candidates for \(layers) layers, expected \(layerSizes.count)") }
            let candidates = try layerSizes.map { size in
                let idx = try IndexCodec.decode(&r, bound: UInt32(size), maxCount: size)
                return GrowCandidates(indices: idx, values: try r.floatArray(idx.count, "grow candidate values"))
            }
            guard candidates.allSatisfy({ $0.values.allSatisfy(\.isFinite) }) else { throw WireError.nonFinite("grow candidates") }
            return .growCandidates(candidates)
        default:
            throw WireError.malformedPayload("reply kind \(kind) where \(expecting) was asked for")
        }
    }
}

/// The coordinator's merge of a step's replies, each weighted by its images: the grow
/// score (the candidates' values at their places, zero elsewhere) or the unit scores.
public final class ReplyMerger {
    let count: Int
    let model: ViTConfig
    private var request = StepRequest.none
    private var masks: MaskSet?
    /// Σ images·value of the workers' grow candidates, in layout order.
    private let candidateScore: FloatBuffer
    private var unitScoreSum: UnitScores?

    public init(parameters: Int, model: ViTConfig) {
        count = parameters; self.model = model
        candidateScore = FloatBuffer(count: parameters)
    }

    public func begin(request: StepRequest, masks: MaskSet?) {
        self.request = request; self.masks = masks
        unitScoreSum = nil
        switch request {
        case .none: break
        case .growCandidates: candidateScore.zero()
        case .unitScores: unitScoreSum = UnitScores(config: model)
        }
    }

    /// Checks a reply against the model before anything is added (throws when it does not fit).
    public func check(_ reply: StepReply) throws {
        if case let .unitScores(flat) = reply, UnitScores(flat: flat, config: model) == nil {
            throw WireError.malformedPayload("unit scores do not fit the model")
        }
    }

    public func add(_ reply: StepReply, weight: Float) {
        switch reply {
        case .none: break
        case let .growCandidates(candidates):
            for (t, c) in zip(masks?.prunable ?? [], candidates) {
                let dst = candidateScore.pointer + t.offset
                for (i, v) in zip(c.indices, c.values) { dst[Int(i)] += weight * v }
            }
        case let .unitScores(flat):
            if let u = UnitScores(flat: flat, config: model) { unitScoreSum?.add(u, weight: weight) }
        }
    }

    /// The means over the step's images (`inverse` = 1 / images); the grow score's pointer
    /// stays valid until the next `begin`.
    public func finish(inverse: Float) -> MergedReplies {
        var score: UnsafeMutablePointer<Float>? = nil
        if case .growCandidates = request {
            VectorOps.scale(candidateScore.pointer, inverse, count)
            score = candidateScore.pointer
        }
        unitScoreSum?.scale(inverse)
        return MergedReplies(growScore: score, unitScores: unitScoreSum)
    }
}
