import Compression
import Core
import Model
import Sparsity

/// What a step asks of every worker besides its share of the images: declared once here,
/// carried by the trainer's `StepWork`, the step frame (`Payload.params`) and a worker's
/// compute job alike, with one encoding.
public struct StepOrder: Sendable, Equatable {
    /// What the sparsity method asks besides the gradient (grow candidates, or unit scores
    /// with their candidate-weight seed).
    public var request: StepRequest
    /// SViTE+: the token selector's temperature and noise at this step (nil: no selector).
    public var selector: SelectorSchedule?
    /// How the workers send their gradient. A source in this process has no wire and
    /// computes every value.
    public var compression: GradientCompression
    /// Whether workers send their gradient's mean square per tensor (the coordinator tracks
    /// AdamW's frozen variance: `CompressionSchedule.tracksVariance`).
    public var meanSquares: Bool
    /// The codec of an uncompressed step's values (nil: the coordinator's --gradient-codec,
    /// which the welcome names).
    public var denseCodec: ValueCodec?

    public init(request: StepRequest = .none, selector: SelectorSchedule? = nil, compression: GradientCompression = .dense,
                meanSquares: Bool = false, denseCodec: ValueCodec? = nil) {
        self.request = request; self.selector = selector; self.compression = compression; self.meanSquares = meanSquares
        self.denseCodec = denseCodec
    }

    // Tagged fields, each present only when it says something: 1 request
    // (StepRequest), 2 selector (f32 τ, f32 noise scale), 3 compression (GradientCompression),
    // 4 mean squares wanted (empty), 5 dense codec (u8 tag).

    public func encode(into w: inout ByteWriter) {
        if request != .none { w.field(1) { request.encode(into: &$0) } }
        if let selector { w.field(2) { $0.f32(selector.temperature); $0.f32(selector.noiseScale) } }
        if compression != .dense { w.field(3) { compression.encode(into: &$0) } }
        if meanSquares { w.field(4) { _ in } }
        if let denseCodec { w.field(5) { $0.u8(denseCodec.tag) } }
    }

    /// Reads an order for a model of at most `maxLayers` prunable layers.
    public static func decode(_ r: inout ByteReader, maxLayers: Int) throws -> StepOrder {
        var order = StepOrder()
        try r.fields("step order") { tag, r in
            switch tag {
            case 1:
                order.request = try StepRequest.decode(&r, maxLayers: maxLayers)
            case 2:
                let tau = try r.f32("selector temperature"), noise = try r.f32("selector noise scale")
                guard tau.isFinite && tau > 0 && noise.isFinite && noise >= 0 else {
                    throw WireError.malformedPayload("selector temperature \(tau), noise scale \(noise)")
                }
                order.selector = SelectorSchedule(temperature: tau, noiseScale: noise)
            case 3:
                order.compression = try GradientCompression.decode(&r)
            case 4:
                order.meanSquares = true
            case 5:
                order.denseCodec = try ValueCodec.read(&r, "dense codec")
            default:
                throw WireError.malformedPayload("step order field \(tag) (another svite version's)")
            }
        }
        return order
    }
}
