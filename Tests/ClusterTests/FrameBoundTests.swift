import Core
import Kernels
import Model
import Sparsity
import Testing
import TestSupport
import Wire

/// The frame bound both sides enforce must admit the largest frame a correct peer sends:
/// at an SViTE update step that is every active value plus up to every inactive weight as
/// a grow candidate (c·k is capped only by the inactive count). A dense-sized bound
/// rejected exactly this frame and livelocked the default run at its first update.
@Suite("wire: frame bounds")
struct FrameBoundTests {
    @Test(arguments: [0.5, 0.9])
    func updateStepGradsFitTheBound(sparsity: Double) throws {
        let model = ViTModel(config: ViTConfig.presets["fmnist-tiny"]!)
        var config = SparsityConfig()
        config.method = .svite
        config.sparsity = sparsity
        let masks = try #require(MaskSet.initial(config, model: model, seed: 7))
        let grads = FloatBuffer(count: model.layout.count)
        var rng = Xoshiro256(seed: 1)
        for i in 0 ..< grads.count { grads.pointer[i] = rng.nextUniform() - 0.5 }
        let packed = FloatBuffer(count: masks.packedCount)
        masks.pack(grads.pointer, into: packed.pointer)
        // A request larger than any layer: every inactive weight becomes a candidate.
        let candidates = GrowCandidates.top(masks: masks, gradient: grads.pointer, multiplier: 2, perLayer: masks.prunable.map(\.count))
        let inactive = masks.totalPrunable - masks.activePrunable
        #expect(candidates.reduce(0) { $0 + $1.indices.count } == inactive)

        let payload = Payload.grads(GradientSummary(images: 64, lossSum: 1, correct: 3), codec: .fp32,
                                    values: packed.pointer, count: masks.packedCount, reply: .growCandidates(candidates))
        // Larger than a dense push, which is why the dense bound failed.
        #expect(payload.count > 4 * model.layout.count)
        let limits = FrameLimits(maxRawBytes: FrameLimits.payloadBound(parameters: model.layout.count),
                                 runID: 9, layoutHash: model.layout.hash)
        let header = FrameHeader(type: .grads, runID: 9, step: 100, layoutHash: model.layout.hash)
        for compress in [false, true] {
            let frame = try Frame.decode(Frame(header: header, payload: payload).encoded(compress: compress), limits: limits)
            #expect(frame.payload == payload)
        }
    }
}
