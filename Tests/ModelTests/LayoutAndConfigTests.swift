import Core
import Foundation
import Testing
import Kernels
@testable import Model

@Suite("parameter layout and initialisation")
struct LayoutTests {
    @Test(arguments: [("deit-tiny", 5_717_416), ("deit-small", 22_050_664), ("deit-base", 86_567_656)])
    func parameterCountsMatchTimm(name: String, count: Int) {
        // timm's deit_{tiny,small,base}_patch16_224 parameter counts.
        #expect(ParameterLayout(config: ViTConfig.presets[name]!).parameterCount == count)
    }

    @Test func namesAndShapesAreTimms() {
        let c = ViTConfig.presets["fmnist-tiny"]!
        let l = ParameterLayout(config: c)
        #expect(l.tensors.count == 4 + 12 * 6 + 4)
        #expect(l["cls_token"]?.shape == [1, 1, 96])
        #expect(l["pos_embed"]?.shape == [1, 50, 96])
        #expect(l["patch_embed.proj.weight"]?.shape == [96, 1, 4, 4])
        #expect(l["blocks.5.attn.qkv.weight"]?.shape == [288, 96])
        #expect(l["blocks.0.attn.proj.weight"]?.shape == [96, 96])
        #expect(l["blocks.3.mlp.fc1.weight"]?.shape == [384, 96])
        #expect(l["blocks.3.mlp.fc2.weight"]?.shape == [96, 384])
        #expect(l["head.weight"]?.shape == [10, 96])
        #expect(l["blocks.6.norm1.weight"] == nil)
        // Offsets are aligned, increasing, and do not overlap.
        var end = 0
        for t in l.tensors {
            #expect(t.offset % ParameterLayout.alignment == 0)
            #expect(t.offset >= end)
            end = t.offset + t.count
        }
        #expect(l.count >= end)
    }

    @Test func hashSeparatesLayouts() {
        let a = ParameterLayout(config: ViTConfig.presets["fmnist-tiny"]!)
        var c = ViTConfig.presets["fmnist-tiny"]!
        #expect(a.hash == ParameterLayout(config: c).hash)
        c.depth = 5
        #expect(a.hash != ParameterLayout(config: c).hash)
    }

    @Test func initialisationFollowsTimm() {
        let model = ViTModel(config: ViTConfig.presets["fmnist-tiny"]!)
        let p = FloatBuffer(count: model.layout.count)
        Initializer.initialize(p, layout: model.layout, seed: 1)
        let l = model.layout
        #expect(p.view(l.spec("blocks.0.norm1.weight")).allSatisfy { $0 == 1 })
        #expect(p.view(l.spec("blocks.0.norm1.bias")).allSatisfy { $0 == 0 })
        #expect(p.view(l.spec("blocks.2.attn.qkv.bias")).allSatisfy { $0 == 0 })
        let w = p.view(l.spec("blocks.1.mlp.fc1.weight"))
        let mean = w.reduce(0, +) / Float(w.count)
        let std = (w.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(w.count)).squareRoot()
        #expect(abs(mean) < 1e-3)
        #expect(std > 0.016 && std < 0.019)  // N(0, 0.02²) truncated at ±2σ has σ ≈ 0.0176
        #expect(w.allSatisfy { abs($0) <= 0.04 })
        let pe = p.view(l.spec("patch_embed.proj.weight"))
        #expect(pe.allSatisfy { abs($0) <= 0.25 } && pe.contains { abs($0) > 0.2 })  // U(±1/√16)
        // Same seed, same parameters; another seed, others.
        let q = FloatBuffer(count: l.count), r = FloatBuffer(count: l.count)
        Initializer.initialize(q, layout: l, seed: 1)
        Initializer.initialize(r, layout: l, seed: 2)
        #expect(p.array == q.array)
        #expect(p.array != r.array)
    }

    @Test func flopCountOfDeitTiny() {
        // DeiT-Tiny is quoted at 1.3 GMACs: 2.5 GFLOPs forward.
        let f = ViTModel(config: ViTConfig.presets["deit-tiny"]!).forwardFLOPsPerImage
        #expect(f > 2.4e9 && f < 2.6e9, "\(f)")
    }
}
