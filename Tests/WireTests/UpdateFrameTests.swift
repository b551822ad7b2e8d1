import Compression
import Core
import Foundation
import Model
import Sparsity
import Steps
import Testing
import TestSupport
@testable import Wire

@Suite("wire: update frames")
struct UpdateFrameTests {
    @Test func updateFramesRoundTripAndRefuseDamage() throws {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [48, 16]), ("blocks.0.attn.qkv.bias", [48]), ("head.weight", [10, 16])])
        let g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 5)
        for i in stride(from: 0, to: layout.count, by: 7) { g.pointer[i] = rng.float() }
        g.pointer[3] = -0.0
        let sparse = SparseGradient.nonzeros(of: g.pointer, layout: layout)
        #expect(sparse.entries == (layout.count + 6) / 7 + 1)
        let back = FloatBuffer(count: layout.count)
        sparse.scatter(into: back.pointer, layout: layout)
        for i in 0 ..< layout.count { #expect(back.pointer[i].bitPattern == g.pointer[i].bitPattern) }
        let topology = TopologyChange(maskVersion: 3, layers: [
            .init(off: [1, 5], on: [2, 9, 700], weights: [0.5, -0.25, 1], moments: [[0, 0, 0], [1e-6, 2e-6, 3e-6]]),
            .init(off: [], on: [], weights: [], moments: [[], []])])
        let update = ParameterUpdate(step: 41, applied: true, lr: 3e-4, optimizerUpdates: 40, freezeVariance: true, varianceScale: [0.5, 1, 1.25],
                                     estimate: true, gradient: sparse, topology: topology, checksum: 0xDEAD_BEEF)
        let table = [RankAssignment(rank: 0, assignment: Assignment(epoch: 2, start: 0, count: 64)),
                     RankAssignment(rank: 3, assignment: Assignment(epoch: 2, start: 64, count: 64))]
        let order = StepOrder(compression: .estimate(density: 0.01))
        let payload = Payload.params(StepFrame(order: order, shares: .table(table), update: update), layout: layout)
        let context = UpdateContext(layout: layout, layerSizes: [768, 160], moments: 2)
        let (h, _) = try Payload.decodeParams(payload, maxLayers: 2, maxIndices: 768, updates: context)
        #expect(h.update == update && h.shares == .table(table) && h.order == order)
        #expect(h.share(rank: 3) == table[1].assignment && h.share(rank: 1) == nil)
        // Without a replica the update cannot be read; with the wrong moments it does not fit.
        #expect(throws: WireError.self) { _ = try Payload.decodeParams(payload, maxLayers: 2, maxIndices: 768) }
        #expect(throws: WireError.self) {
            _ = try Payload.decodeParams(payload, maxLayers: 2, maxIndices: 768,
                                               updates: .init(layout: layout, layerSizes: [768, 160], moments: 1))
        }
        // A payload cut short is refused, or (cut between two fields: the frame's size and
        // checksum catch that on the wire) reads as a frame without the fields cut off.
        for cut in stride(from: 0, to: payload.count - 1, by: 3) {
            if let f = try? Payload.decodeParams(Array(payload[..<cut]), maxLayers: 2, maxIndices: 768, updates: context).0 {
                #expect(f != h, "cut at \(cut)")
            }
        }
        var refused = 0
        for k in 0 ..< 2000 {
            var b = payload
            b[Int(rng.next() % UInt64(b.count))] ^= UInt8(1 << (k % 8))
            do { _ = try Payload.decodeParams(b, maxLayers: 2, maxIndices: 768, updates: context) } catch { refused += 1 }
        }
        #expect(refused > 0)
    }

    /// The largest frame a run sends, the welcome with the whole replicated state (weights,
    /// AdamW's two moments, the mask), fits the receivers' bound at every model size (the
    /// 64 KiB slack hid it for test models: a 0.68M-parameter welcome was refused).
    @Test func aReplicatedWelcomeFitsTheFrameBound() throws {
        for n in [1000, 50_000, 678_730] {
            let p = FloatBuffer(count: n)
            let info = WelcomeInfo(rank: 0, runID: 1, config: String(repeating: "x", count: 4000), heartbeatSeconds: 1, gradientCodec: .fp32, replicated: true)
            let snapshot = OptimizerSnapshot(updates: 3, varianceFrozen: false, buffers: [UnsafePointer(p.pointer), UnsafePointer(p.pointer)])
            let payload = Payload.welcome(info, params: p.pointer, count: n, mask: (1, [UInt8](repeating: 0, count: (n + 7) / 8)), optimizer: snapshot)
            #expect(payload.count <= FrameLimits.payloadBound(parameters: n), "\(n) parameters: \(payload.count) bytes")
            let frame = Frame(header: FrameHeader(type: .welcome, runID: 1, layoutHash: 2), payload: payload).encoded(compress: false)
            _ = try Frame.decode(frame, limits: FrameLimits(maxRawBytes: FrameLimits.payloadBound(parameters: n)))
        }
    }

    /// With dense vectors, one-dimensional tensors (the bias here) go whole and keep no
    /// residual; matrices still send their top k.
}
