import Core

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
