import Core
import Model
import Sparsity
import Testing
import TestSupport
@testable import Compression

/// Uncompressed steps in int8: every active value travels, rounded in blocks, and the
/// worker keeps what it rounded off for the next step.
@Suite("dense compressor")
struct DenseCompressorTests {
    /// Over many steps, what the receiver decoded plus the residual is, weight by weight,
    /// the sum of the gradients; inactive weights send and keep nothing; a frame is about a
    /// quarter of fp32's bytes. bf16 keeps no residual (its rounding is 2^-9 of a value).
    @Test func int8SendsEveryValueAndKeepsItsRounding() throws {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [48, 16]), ("blocks.0.attn.qkv.bias", [48]), ("head.weight", [10, 16])])
        for masked in [false, true] {
            let masks = MaskSet(layout: layout, prunable: [layout.tensors[0]])
            masks.randomize(counts: [layout.tensors[0].name: 300], seed: 5)
            let mask = masked ? masks : nil
            let c = DenseCompressor(spec: CompressionSpec(denseCodec: .fp32), layout: layout)
            var rng = Rand(s: 29)
            var gradientSum = [Double](repeating: 0, count: layout.count), received = gradientSum
            let g = FloatBuffer(count: layout.count), out = FloatBuffer(count: layout.count), full = FloatBuffer(count: layout.count)
            for step in 0 ..< 30 {
                for i in 0 ..< layout.count {
                    // Values of very different sizes side by side, as a gradient's are.
                    g.pointer[i] = rng.float() * (i % 7 == 0 ? 10 : 0.01) * (masks.mask.pointer[i] == 0 && masked ? 0 : 1)
                    gradientSum[i] += Double(g.pointer[i])
                }
                var w = ByteWriter()
                try c.encode(g.pointer, .dense, context: CompressionContext(masks: mask, denseCodec: .int8), into: &w)
                let n = mask?.packedCount ?? layout.count
                #expect(w.bytes.count <= n + (n + 63) / 64 + 8, "step \(step): \(w.bytes.count) bytes for \(n) values")
                var r = ByteReader(w.bytes)
                _ = try GradientValues.decode(&r, into: out.pointer, count: n, layout: layout)
                if let mask { mask.unpack(out.pointer, into: full.pointer) } else { full.pointer.update(from: out.pointer, count: n) }
                for i in 0 ..< layout.count { received[i] += Double(full.pointer[i]) }
            }
            let residual = try #require(c.residual)
            let worst = (0 ..< layout.count).map { abs(received[$0] + Double(residual.pointer[$0]) - gradientSum[$0]) }.max()!
            #expect(worst < 1e-4, "masked \(masked): received + residual differs from the gradient sum by \(worst)")
            let left = (0 ..< layout.count).map { abs(residual.pointer[$0]) }.max()!
            #expect(left > 0, "int8 rounds something off")
            if masked { #expect((0 ..< layout.count).allSatisfy { masks.mask.pointer[$0] != 0 || residual.pointer[$0] == 0 }) }
            c.reset()
            #expect((0 ..< layout.count).allSatisfy { residual.pointer[$0] == 0 })
        }
        let half = DenseCompressor(spec: CompressionSpec(denseCodec: .bf16), layout: layout0)
        let g = FloatBuffer(count: layout0.count)
        var w = ByteWriter()
        try half.encode(g.pointer, .dense, context: CompressionContext(masks: nil), into: &w)
        #expect(half.residual == nil)
    }

    let layout0 = ParameterLayout(tensors: [("head.weight", [10, 16])])
}
