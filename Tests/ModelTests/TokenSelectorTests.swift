import Core
import Foundation
import Kernels
import Testing
@testable import Model

/// 12×12 images, patch 3: 16 patches; the selector keeps half.
private func selectorConfig(keep: Double, hidden: Int) -> ViTConfig {
    var c = ViTConfig(imageSize: 12, patchSize: 3, inChannels: 1, numClasses: 4, dim: 8, depth: 2, heads: 2, mlpRatio: 2)
    c.tokenKeep = keep
    c.selectorHidden = hidden
    return c
}

private func gumbel(_ n: Int, seed: UInt64) -> [Float] {
    var rng = Xoshiro256(seed: seed)
    return (0 ..< n).map { _ in rng.nextGumbel() }
}

@Suite("SViTE+ token selector", .serialized)
struct TokenSelectorTests {
    @Test func layoutAndCounts() {
        let c = selectorConfig(keep: 0.5, hidden: 3)
        let m = ViTModel(config: c)
        #expect(c.keptPatches == 8 && c.blockTokens == 9)
        #expect(m.layout.spec("token_selector.fc1.weight").shape == [3, 8] && m.layout.spec("token_selector.fc2.weight").shape == [1, 3])
        #expect(ViTModel(config: selectorConfig(keep: 0.5, hidden: 0)).layout.spec("token_selector.fc.weight").shape == [1, 8])
        // The blocks run on 9 tokens instead of 17: far fewer FLOPs.
        var plain = c
        plain.tokenKeep = nil
        #expect(c.forwardFLOPsPerImage < 0.6 * plain.forwardFLOPsPerImage)
        var bad = c
        bad.tokenKeep = 0
        #expect(throws: ConfigError.self) { try bad.validate() }
        #expect(c.yaml.contains("token_keep: 0.5") && c.yaml.contains("selector_hidden: 3"))
    }

    /// The straight-through gradient is the derivative of the soft path: with the kept
    /// set and soft₀ frozen, kept token j is scaled by 1 − soft₀_j + soft_j(θ), smooth in
    /// θ, equal to the real forward at θ₀, and its central differences must match the
    /// analytic gradient of every tensor, the selector's included. Under the attention
    /// relaxation w enters every block's attention as log w on the token's key logits;
    /// under token_scale it multiplies the token.
    @Test(arguments: [0, 3], SelectorRelaxation.allCases)
    func straightThroughGradientMatchesTheSoftPath(hidden: Int, relaxation: SelectorRelaxation) {
        let c = selectorConfig(keep: 0.5, hidden: hidden)
        let model = ViTModel(config: c)
        let params = randomParameters(model, seed: 31)
        let batch = TinyBatch(config: c, batch: 3, seed: 32)
        let noise = gumbel(3 * c.numPatches, seed: 33)
        let ws = ViTWorkspace(model: model, batch: 3, threads: 1)
        let grads = FloatBuffer(count: model.layout.count)
        noise.withUnsafeBufferPointer { nz in
            batch.images.withUnsafeBufferPointer { img in
                batch.labels.withUnsafeBufferPointer { lab in
                    let live = TokenSelection(noise: nz.baseAddress, temperature: 0.7, relaxation: relaxation)
                    let r0 = model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!,
                                                   labels: lab.baseAddress!, smoothing: 0.1, workspace: ws, selection: live)
                    var frozen = live
                    frozen.frozen = model.tokenSelection(from: ws)
                    #expect(frozen.frozen!.kept.count == 3 * 8)
                    let loss = { () -> Double in
                        model.forward(params: params.pointer, images: img.baseAddress!, labels: lab.baseAddress!,
                                      smoothing: 0.1, workspace: ws, selection: frozen).meanLoss
                    }
                    #expect(abs(loss() - r0.meanLoss) < 1e-6)
                    var worst = 0.0
                    for t in model.layout.tensors {
                        let idx = Array(0 ..< min(t.count, 48))
                        let r = GradientCheck.check(analytic: grads.pointer, input: params.pointer, indices: idx.map { $0 + t.offset },
                                                    step: 3e-3, atol: 2e-4, rtol: 2e-2, loss: loss)
                        #expect(r.passed, "\(t.name): \(r)")
                        worst = max(worst, r.maxRelativeError)
                        if t.name.hasPrefix("token_selector") || t.name.hasPrefix("blocks.0.attn.qkv.weight") {
                            #expect(grads.view(t).contains { $0 != 0 }, "\(t.name) has no gradient")
                        }
                    }
                    print("token selector (hidden \(hidden), \(relaxation)) soft-path differences: worst relative error \(worst)")
                }
            }
        }
    }

    /// Keeping every patch with τ → 0 is the model without a selector: the same logits
    /// bit for bit and the same gradients for every shared tensor.
    @Test func keepingEveryPatchIsThePlainModel() {
        let c = selectorConfig(keep: 1, hidden: 2)
        var plainConfig = c
        plainConfig.tokenKeep = nil
        let model = ViTModel(config: c), plain = ViTModel(config: plainConfig)
        let params = randomParameters(model, seed: 41)
        let plainParams = FloatBuffer(count: plain.layout.count)
        for t in plain.layout.tensors { _ = plainParams.view(t).update(fromContentsOf: params.view(model.layout.spec(t.name))) }
        let batch = TinyBatch(config: c, batch: 4, seed: 42)
        let g = FloatBuffer(count: model.layout.count), gp = FloatBuffer(count: plain.layout.count)
        var a = [Float](repeating: 0, count: 16), b = a
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                let ws = ViTWorkspace(model: model, batch: 4, threads: 2), wp = ViTWorkspace(model: plain, batch: 4, threads: 2)
                model.forwardBackward(params: params.pointer, grads: g.pointer, images: img.baseAddress!, labels: lab.baseAddress!,
                                      workspace: ws, selection: TokenSelection(noise: nil, temperature: 1e-3))
                plain.forwardBackward(params: plainParams.pointer, grads: gp.pointer, images: img.baseAddress!, labels: lab.baseAddress!, workspace: wp)
                a.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
                b.withUnsafeMutableBufferPointer { plain.copyLogits(from: wp, into: $0.baseAddress!) }
            }
        }
        #expect(a == b)
        for t in plain.layout.tensors {
            let x = g.view(model.layout.spec(t.name)), y = gp.view(t)
            let scale = y.map { abs($0) }.max() ?? 0
            #expect(zip(x, y).allSatisfy { abs($0 - $1) <= 1e-6 * max(scale, 1e-3) }, "\(t.name)")
        }
    }

    /// Removed tokens are gone: changing the pixels of a removed patch (a little, so it
    /// stays removed) leaves every logit bit for bit the same; changing a kept one does not.
    @Test func removedPatchesDoNotReachTheOutput() {
        let c = selectorConfig(keep: 0.5, hidden: 0)
        let model = ViTModel(config: c)
        let params = randomParameters(model, seed: 51)
        var images = TinyBatch(config: c, batch: 2, seed: 52).images
        let ws = ViTWorkspace(model: model, batch: 2, threads: 1, training: false)
        func logits(_ sel: TokenSelection?) -> [Float] {
            images.withUnsafeBufferPointer { _ = model.forward(params: params.pointer, images: $0.baseAddress!, labels: nil, workspace: ws, selection: sel) }
            var out = [Float](repeating: 0, count: 8)
            out.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
            return out
        }
        let before = logits(nil)
        let selection = model.tokenSelection(from: ws).kept
        let kept = Set(selection[0 ..< 8].map(Int.init))
        let removed = (0 ..< 16).first { !kept.contains($0) }!, keptPatch = kept.min()!
        func bump(_ patch: Int) {  // image 0, the 3×3 pixels of `patch`
            let gy = patch / 4, gx = patch % 4
            for y in 0 ..< 3 {
                for x in 0 ..< 3 {
                    let pixel: Int = (gy * 3 + y) * 12 + gx * 3 + x
                    images[pixel] += 0.2
                }
            }
        }
        bump(removed)
        let after = logits(nil)
        #expect(model.tokenSelection(from: ws).kept == selection, "the bumped patch stays removed")
        #expect(after == before)
        bump(keptPatch)
        #expect(logits(nil)[0 ..< 4] != before[0 ..< 4])
        // Evaluation is deterministic: the same images select the same patches.
        _ = logits(nil)
        let once = model.tokenSelection(from: ws).kept
        _ = logits(nil)
        #expect(model.tokenSelection(from: ws).kept == once)
    }

    /// With the noise scaled to 0 (the end of the noise decay) training selects exactly the
    /// patches evaluation does; at full scale the noise changes the selection.
    @Test func noiseScaleZeroTrainsOnTheEvaluationSelection() {
        let c = selectorConfig(keep: 0.5, hidden: 0)
        let model = ViTModel(config: c)
        let params = randomParameters(model, seed: 61)
        let batch = TinyBatch(config: c, batch: 4, seed: 62)
        let noise = gumbel(4 * c.numPatches, seed: 63)
        let grads = FloatBuffer(count: model.layout.count)
        let ws = ViTWorkspace(model: model, batch: 4, threads: 1)
        func kept(_ sel: TokenSelection?) -> [Int32] {
            batch.images.withUnsafeBufferPointer { img in
                batch.labels.withUnsafeBufferPointer { lab in
                    if let sel {
                        _ = model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!,
                                                  labels: lab.baseAddress!, workspace: ws, selection: sel)
                    } else {
                        _ = model.forward(params: params.pointer, images: img.baseAddress!, labels: lab.baseAddress!, workspace: ws)
                    }
                }
            }
            return model.tokenSelection(from: ws).kept
        }
        let evaluation = kept(nil)
        noise.withUnsafeBufferPointer { nz in
            #expect(kept(TokenSelection(noise: nz.baseAddress, temperature: 1, noiseScale: 0)) == evaluation)
            #expect(kept(TokenSelection(noise: nz.baseAddress, temperature: 1, noiseScale: 1)) != evaluation)
        }
    }
}
