import Core
import Kernels
#if canImport(Glibc)
import Glibc
#endif

// SViTE+: the learnable top-k token selector, its settings and its forward and backward
// inside a lane's pass (ViT.swift calls them around the blocks).

/// How the straight-through gradient reaches the selector's scores: through what the
/// kept tokens' weight w (1 in the forward pass) would scale.
public enum SelectorRelaxation: String, Sendable, CaseIterable, Codable {
    /// w scales each kept token's attention weight as a key in every block, i.e. adds
    /// log w to its attention logits (as DynamicViT's attention masking): w → 0 is the
    /// token's removal, so ∂L/∂w measures what attending to the token is worth.
    case attention
    /// w scales the kept token's embedding (the paper's Algorithm 2, the official code):
    /// w → 0 leaves a blank token in the attention, and with pre-norm blocks ∂L/∂w only
    /// sees the token's share of its own residual stream. On Fashion-MNIST this keeps the
    /// background and removes the garment (docs/results/findings.md).
    case tokenScale = "token_scale"
}

/// What the selector's scores are trained toward.
public enum SelectorObjective: String, Sendable, CaseIterable, Codable {
    /// The signed straight-through gradient (the paper's Algorithm 2): raise the scores of
    /// the kept tokens whose weight the loss wants larger.
    case straightThrough = "straight_through"
    /// The absolute first-order Taylor importance |∂L/∂w| of each kept token, as S2ViTE
    /// scores heads by |Σ A·∂L/∂A|: raise the scores of the tokens the loss is most
    /// sensitive to, whichever way. (Not the gradient of a loss: the straight-through
    /// backward with ∂L/∂w replaced by −|∂L/∂w|.)
    case taylor
}

/// SViTE+: the token selector's settings for one step.
public struct SelectorSchedule: Sendable, Equatable {
    /// τ of the straight-through soft weights.
    public var temperature: Float
    /// How much of the Gumbel noise the training selection adds to the scores (1 … 0).
    public var noiseScale: Float

    public init(temperature: Float, noiseScale: Float = 1) {
        self.temperature = temperature; self.noiseScale = noiseScale
    }
}

/// SViTE+'s token selection for one pass: Gumbel noise and the softmax temperature of
/// the straight-through weights.
public struct TokenSelection: @unchecked Sendable {
    /// Gumbel(0, 1) noise per (image, patch), (B, P); nil: none (the top-k of the scores).
    public var noise: UnsafePointer<Float>?
    /// The noise is added to the scores times this (annealed to 0 so that the last steps
    /// train on the selection evaluation makes).
    public var noiseScale: Float
    /// τ: the soft weights are softmax((s + g) / τ) over an image's patches.
    public var temperature: Float
    /// Where the straight-through weights act (see SelectorRelaxation).
    public var relaxation: SelectorRelaxation
    /// What the scores learn from (see SelectorObjective).
    public var objective: SelectorObjective
    /// For checking the straight-through gradient: keep these patches (B, k) whatever the
    /// scores, and weight kept patch j by 1 − soft₀_j + soft_j with soft₀ (B, P) fixed,
    /// a smooth function whose derivative at soft = soft₀ is the straight-through one.
    var frozen: (kept: [Int32], soft: [Float])?

    public init(noise: UnsafePointer<Float>?, temperature: Float, noiseScale: Float = 1,
                relaxation: SelectorRelaxation = .attention, objective: SelectorObjective = .straightThrough) {
        precondition(temperature > 0, "TokenSelection: temperature must be > 0")
        self.noise = noise; self.temperature = temperature; self.noiseScale = noiseScale
        self.relaxation = relaxation; self.objective = objective
    }

    func lane(_ r: Range<Int>, patches: Int, kept k: Int) -> TokenSelection {
        var t = self
        t.noise = noise.map { $0 + r.lowerBound * patches }
        t.frozen = frozen.map { (Array($0.kept[(r.lowerBound * k) ..< (r.upperBound * k)]),
                                 Array($0.soft[(r.lowerBound * patches) ..< (r.upperBound * patches)])) }
        return t
    }
}

extension ViTModel {
    /// The last pass's selection: kept patch indices (B, k) and soft weights (B, P).
    public func tokenSelection(from ws: ViTWorkspace) -> (kept: [Int32], soft: [Float]) {
        precondition(config.hasTokenSelector, "tokenSelection: the model has no token selector")
        var kept: [Int32] = [], soft: [Float] = []
        for lane in ws.lanes {
            kept += lane.selected
            soft += Array(UnsafeBufferPointer(start: lane.store.pointer + lane.selSoft, count: lane.batch * config.numPatches))
        }
        return (kept, soft)
    }
}

extension ViTModel {
    /// scores: (b, P) = selector(patch tokens of x0); soft: (b, P) = softmax((s + g)/τ);
    /// kept: the top-k of s + g per image (ascending); block 0's input: (b, k+1, D) = CLS
    /// then the kept tokens; each has a straight-through weight w = hard − stop_grad(soft)
    /// + soft, exactly 1 in the forward pass, that scales the token (token_scale) or its
    /// attention weight as a key (attention: log w on its logits, in `selKeyBias`).
    func selectorForward(_ lane: Lane, params P: UnsafePointer<Float>, selection: TokenSelection?, mode: MatMulMode) {
        let c = config, o = offsets, sel = o.selector!
        let A = lane.store.pointer
        let b = lane.batch, np = c.numPatches, d = c.dim, k = c.keptPatches, nFull = c.tokens, n = c.blockTokens
        let h = c.selectorHidden
        let tau = selection?.temperature ?? 1, relaxation = selection?.relaxation ?? .attention
        let noiseScale = selection?.noiseScale ?? 0
        let x0 = A + lane.x0, xs = A + lane.blocks[0].xIn
        for i in 0 ..< b {
            let patches = x0 + i * nFull * d + d
            let score = A + lane.selScores + i * np, soft = A + lane.selSoft + i * np
            if h > 0 {
                let hidden = A + lane.selHidden + i * np * h, g = A + lane.selGelu + i * np * h
                Linear.forward(y: hidden, x: patches, weight: P + sel.w1, bias: P + sel.b1, rows: np, inFeatures: d, outFeatures: h, mode: mode)
                GELU.forward(g, hidden, count: np * h)
                Linear.forward(y: score, x: g, weight: P + sel.w2, bias: P + sel.b2, rows: np, inFeatures: h, outFeatures: 1, mode: mode)
            } else {
                Linear.forward(y: score, x: patches, weight: P + sel.w1, bias: P + sel.b1, rows: np, inFeatures: d, outFeatures: 1, mode: mode)
            }
            for j in 0 ..< np { soft[j] = score[j] + noiseScale * (selection?.noise?[i * np + j] ?? 0) }
            // Top-k of the perturbed scores, ties to the lower index; kept in patch order.
            let kept = selection?.frozen.map { f in (0 ..< k).map { Int(f.kept[i * k + $0]) } }
                ?? (0 ..< np).sorted { soft[$0] != soft[$1] ? soft[$0] > soft[$1] : $0 < $1 }.prefix(k).sorted()
            Softmax.forwardRow(soft, soft, cols: np, scale: 1 / tau)
            let out = xs + i * n * d, keyBias = A + lane.selKeyBias + i * n
            out.update(from: x0 + i * nFull * d, count: d)
            keyBias[0] = 0
            for (m, j) in kept.enumerated() {
                lane.selected[i * k + m] = Int32(j)
                let w: Float = selection?.frozen.map { 1 - $0.soft[i * np + j] + soft[j] } ?? 1
                lane.selectedWeight[i * k + m] = w
                let dst = out + (1 + m) * d
                dst.update(from: patches + j * d, count: d)
                if relaxation == .tokenScale {
                    if w != 1 { VectorOps.scale(dst, w, d) }
                    keyBias[1 + m] = 0
                } else {
                    keyBias[1 + m] = log(w)
                }
            }
        }
    }

    /// Attention relaxation: adds each key's column of ∂L/∂logits (left in the lane's
    /// attention scratch by Attention.backward, (b, H, N, N)) into `selKeyGrad` (b, N).
    func accumulateKeyGradient(_ lane: Lane, heads: Int) {
        let A = lane.store.pointer, n = config.blockTokens
        let dS = A + lane.scratch, out = A + lane.selKeyGrad
        for i in 0 ..< lane.batch {
            for r in 0 ..< heads * n { VectorOps.accumulate(out + i * n, dS + (i * heads * n + r) * n, n) }
        }
    }

    /// From ∂L/∂(block 0 input) in `dX`: ∂L/∂x0 for all N tokens into `dX0` (kept tokens
    /// directly, every patch through the scorer) and the scorer's parameter gradients.
    /// Straight-through: ∂L/∂soft_j = ∂L/∂w_j for kept j (token_scale: x_j · ∂L/∂x'_j;
    /// attention: Σ over blocks, heads and queries of ∂L/∂logit(query, j)), 0 for removed
    /// ones; then through the softmax: ∂L/∂s = (1/τ) soft ⊙ (∂L/∂soft − Σ soft ⊙ ∂L/∂soft).
    func selectorBackward(_ lane: Lane, params P: UnsafePointer<Float>, grads G: UnsafeMutablePointer<Float>, selection: TokenSelection?, mode: MatMulMode) {
        let c = config, o = offsets, sel = o.selector!
        let A = lane.store.pointer
        let b = lane.batch, np = c.numPatches, d = c.dim, k = c.keptPatches, nFull = c.tokens, n = c.blockTokens
        let h = c.selectorHidden
        let tau = selection?.temperature ?? 1, relaxation = selection?.relaxation ?? .attention
        let objective = selection?.objective ?? .straightThrough
        let x0 = A + lane.x0, dX = A + lane.dX, dX0 = A + lane.dX0
        VectorOps.zero(dX0, b * nFull * d)
        for i in 0 ..< b {
            let dxs = dX + i * n * d, dx0 = dX0 + i * nFull * d, patches = x0 + i * nFull * d + d
            let dw = A + lane.selGrad + i * np, ds = A + lane.selGrad + (b + i) * np
            dx0.update(from: dxs, count: d)
            VectorOps.zero(dw, np)
            for m in 0 ..< k {
                let j = Int(lane.selected[i * k + m]), w = lane.selectedWeight[i * k + m]
                let g = dxs + (1 + m) * d, dst = dx0 + (1 + j) * d
                if relaxation == .tokenScale {
                    if w == 1 { VectorOps.accumulate(dst, g, d) } else { for e in 0 ..< d { dst[e] += w * g[e] } }
                    dw[j] = VectorOps.dot(patches + j * d, g, d)
                } else {
                    // ∂L/∂w = ∂L/∂(log w) / w, the first summed over blocks, heads and queries
                    VectorOps.accumulate(dst, g, d)
                    dw[j] = A[lane.selKeyGrad + i * n + 1 + m] / w
                }
            }
            if objective == .taylor {
                // The scorer learns to put its mass on the tokens with the largest first-order
                // influence |∂L/∂w| (as S2ViTE scores heads by |Σ A·∂L/∂A|), whatever the sign.
                for m in 0 ..< k { let j = Int(lane.selected[i * k + m]); dw[j] = -abs(dw[j]) }
            }
            VectorOps.zero(ds, np)
            Softmax.backward(dx: ds, dy: dw, y: A + lane.selSoft + i * np, rows: 1, cols: np, scale: 1 / tau)
            if h > 0 {
                let dg = A + lane.selHiddenGrad + i * np * h, dhidden = A + lane.selHiddenGrad + (b + i) * np * h
                VectorOps.zero(dg, np * h)
                Linear.backward(dx: dg, dweight: G + sel.w2, dbias: G + sel.b2, dy: ds, x: A + lane.selGelu + i * np * h,
                                weight: P + sel.w2, rows: np, inFeatures: h, outFeatures: 1, mode: mode)
                VectorOps.zero(dhidden, np * h)
                GELU.backward(dx: dhidden, dy: dg, x: A + lane.selHidden + i * np * h, count: np * h)
                Linear.backward(dx: dx0 + d, dweight: G + sel.w1, dbias: G + sel.b1, dy: dhidden, x: patches,
                                weight: P + sel.w1, rows: np, inFeatures: d, outFeatures: h, mode: mode)
            } else {
                Linear.backward(dx: dx0 + d, dweight: G + sel.w1, dbias: G + sel.b1, dy: ds, x: patches,
                                weight: P + sel.w1, rows: np, inFeatures: d, outFeatures: 1, mode: mode)
            }
        }
    }
}
