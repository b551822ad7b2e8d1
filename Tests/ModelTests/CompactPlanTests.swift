import Core
import Kernels
import Testing
@testable import Model

/// Three heads of 4 so a block can keep a head in the middle.
let threeHeadConfig = ViTConfig(imageSize: 6, patchSize: 3, inChannels: 2, numClasses: 5,
                                dim: 12, depth: 2, heads: 3, mlpRatio: 2)

@Suite("structured compaction")
struct CompactPlanTests {
    let full = ViTModel(config: threeHeadConfig)
    var plan: CompactPlan {
        CompactPlan(full: full, keptHeads: [[0, 2], [1]], keptNeurons: [[1, 2, 3, 9, 10, 23], Array(0 ..< 24).filter { $0 % 3 != 1 }])
    }

    /// Random full parameters, their compact gather, and the full parameters with the
    /// pruned units zeroed (the scatter of that gather).
    func parameters(_ p: CompactPlan, seed: UInt64) -> (full: FloatBuffer, compact: FloatBuffer, masked: FloatBuffer) {
        let params = randomParameters(full, seed: seed)
        let compact = FloatBuffer(count: p.compact.layout.count)
        p.gather(params.pointer, into: compact.pointer)
        let masked = FloatBuffer(count: full.layout.count)
        p.scatter(compact.pointer, into: masked.pointer)
        return (params, compact, masked)
    }

    @Test func compactLayoutHasTheSmallerShapes() {
        let c = plan.compact
        #expect(c.config.blockHeads == [2, 1] && c.config.blockHidden == [6, 16])
        #expect(c.layout.spec("blocks.0.attn.qkv.weight").shape == [24, 12])
        #expect(c.layout.spec("blocks.0.attn.qkv.bias").shape == [24])
        #expect(c.layout.spec("blocks.1.attn.proj.weight").shape == [12, 4])
        #expect(c.layout.spec("blocks.0.mlp.fc1.weight").shape == [6, 12])
        #expect(c.layout.spec("blocks.1.mlp.fc2.weight").shape == [12, 16])
        #expect(c.forwardFLOPsPerImage < full.forwardFLOPsPerImage)
    }

    @Test func gatherPicksTheUnitsElementsAndScatterPutsThemBack() {
        let p = plan
        let values = FloatBuffer(count: full.layout.count)
        for i in 0 ..< values.count { values.pointer[i] = Float(i) }
        let compact = FloatBuffer(count: p.compact.layout.count)
        p.gather(values.pointer, into: compact.pointer)
        let cl = p.compact.layout, fl = full.layout
        let d = 12, hd = 4
        // qkv row order: q of kept heads, then k, then v; head 2's k rows are full rows 12 + 8 ...
        let cq = compact.pointer + cl.offset("blocks.0.attn.qkv.weight")
        #expect(cq[(2 * hd) * d] == Float(fl.offset("blocks.0.attn.qkv.weight") + (d + 0) * d))
        #expect(cq[(3 * hd) * d] == Float(fl.offset("blocks.0.attn.qkv.weight") + (d + 2 * hd) * d))
        // proj columns: row 5, kept head 2 sits at compact columns 4..<8
        let cp = compact.pointer + cl.offset("blocks.0.attn.proj.weight")
        #expect(cp[5 * 8 + 4] == Float(fl.offset("blocks.0.attn.proj.weight") + 5 * d + 2 * hd))
        // fc2 column of neuron 9 (position 3) in row 7
        let cf = compact.pointer + cl.offset("blocks.0.mlp.fc2.weight")
        #expect(cf[7 * 6 + 3] == Float(fl.offset("blocks.0.mlp.fc2.weight") + 7 * 24 + 9))
        #expect(compact[cl.offset("blocks.0.mlp.fc1.bias") + 3] == Float(fl.offset("blocks.0.mlp.fc1.bias") + 9))

        let back = FloatBuffer(count: full.layout.count)
        p.scatter(compact.pointer, into: back.pointer)
        var kept = 0
        for t in fl.tensors {
            for i in 0 ..< t.count where back[t.offset + i] != 0 || t.offset + i == 0 {
                #expect(back[t.offset + i] == values[t.offset + i])
                kept += 1
            }
        }
        #expect(kept == p.compact.layout.parameterCount)
        // Pruned: head 1 of block 0 (its v rows, its proj columns) and neuron 0 of block 0.
        #expect(back[fl.offset("blocks.0.attn.qkv.weight") + (2 * d + hd) * d] == 0)
        #expect(back[fl.offset("blocks.0.attn.proj.weight") + 3 * d + hd] == 0)
        #expect(back[fl.offset("blocks.0.mlp.fc1.bias")] == 0 && back[fl.offset("blocks.0.mlp.fc2.weight") + 24] == 0)
    }

    /// The compact model is the full model with the pruned units' parameters zeroed; its
    /// gradient, scattered, is the full model's gradient (zero on pruned units).
    @Test func compactForwardBackwardEqualsTheMaskedFullModel() {
        let p = plan
        let (params, compact, masked) = parameters(p, seed: 11)
        let batch = TinyBatch(config: threeHeadConfig, batch: 5, seed: 12)
        let gFull = FloatBuffer(count: full.layout.count), gCompact = FloatBuffer(count: p.compact.layout.count)
        let gScattered = FloatBuffer(count: full.layout.count)
        var logitsFull = [Float](repeating: 0, count: 25), logitsCompact = logitsFull
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                let wsF = ViTWorkspace(model: full, batch: 5, threads: 2), wsC = ViTWorkspace(model: p.compact, batch: 5, threads: 2)
                let rf = full.forwardBackward(params: masked.pointer, grads: gFull.pointer, images: img.baseAddress!,
                                              labels: lab.baseAddress!, smoothing: 0.1, workspace: wsF)
                logitsFull.withUnsafeMutableBufferPointer { full.copyLogits(from: wsF, into: $0.baseAddress!) }
                let rc = p.compact.forwardBackward(params: compact.pointer, grads: gCompact.pointer, images: img.baseAddress!,
                                                   labels: lab.baseAddress!, smoothing: 0.1, workspace: wsC)
                logitsCompact.withUnsafeMutableBufferPointer { p.compact.copyLogits(from: wsC, into: $0.baseAddress!) }
                #expect(abs(rf.lossSum - rc.lossSum) < 1e-5 * max(1, abs(rf.lossSum)))
                #expect(rf.correct == rc.correct)
            }
        }
        for i in 0 ..< 25 { #expect(abs(logitsFull[i] - logitsCompact[i]) <= 1e-5 * max(1, abs(logitsFull[i]))) }
        p.scatter(gCompact.pointer, into: gScattered.pointer)
        var maxDiff: Float = 0, maxG: Float = 0
        for i in 0 ..< gFull.count {
            maxDiff = max(maxDiff, abs(gFull[i] - gScattered[i])); maxG = max(maxG, abs(gFull[i]))
            // A pruned unit gets exactly no gradient in the masked full model either.
            if masked[i] == 0 && params[i] != 0 { #expect(gFull[i] == 0) }
        }
        #expect(maxG > 0 && maxDiff <= 1e-5 * maxG, "max diff \(maxDiff), max |g| \(maxG)")
    }

    /// Why the qkv biases belong to the head: with its weights zero but its v bias left,
    /// a "pruned" head still feeds its bias through attn.proj into the residual stream.
    @Test func aHeadsBiasesArePartOfTheUnit() {
        let p = plan
        let (params, _, masked) = parameters(p, seed: 13)
        let leaky = FloatBuffer(count: full.layout.count)
        leaky.pointer.update(from: masked.pointer, count: masked.count)
        // Head 1 of block 0 stays pruned except for its v bias; its proj columns come back.
        let fl = full.layout
        for i in 0 ..< 4 { leaky.pointer[fl.offset("blocks.0.attn.qkv.bias") + 24 + 4 + i] = params[fl.offset("blocks.0.attn.qkv.bias") + 24 + 4 + i] }
        for r in 0 ..< 12 { for i in 0 ..< 4 { leaky.pointer[fl.offset("blocks.0.attn.proj.weight") + r * 12 + 4 + i] = 0.3 } }
        let batch = TinyBatch(config: threeHeadConfig, batch: 2, seed: 14)
        let ws = ViTWorkspace(model: full, batch: 2, threads: 1, training: false)
        var a = [Float](repeating: 0, count: 10), b = a
        batch.images.withUnsafeBufferPointer { img in
            full.forward(params: masked.pointer, images: img.baseAddress!, labels: nil, workspace: ws)
            a.withUnsafeMutableBufferPointer { full.copyLogits(from: ws, into: $0.baseAddress!) }
            full.forward(params: leaky.pointer, images: img.baseAddress!, labels: nil, workspace: ws)
            b.withUnsafeMutableBufferPointer { full.copyLogits(from: ws, into: $0.baseAddress!) }
        }
        #expect(a != b)
    }

    @Test func compactConfigRoundTripsThroughYAMLAndValidates() throws {
        let c = plan.compact.config
        #expect(c.yaml.contains("block_heads: [2, 1]") && c.yaml.contains("block_hidden: [6, 16]"))
        var bad = c
        bad.blockHeads = [2, 4]
        #expect(throws: ConfigError.self) { try bad.validate() }
        bad.blockHeads = [2]
        #expect(throws: ConfigError.self) { try bad.validate() }
        try c.validate()
    }
}
