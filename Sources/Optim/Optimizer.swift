import Foundation
import Config
import Core
import Kernels
import Model

/// AdamW or SGD over the flat parameter buffer. The moments mirror the parameter layout
/// (same offsets), so they checkpoint by tensor name and, later, mask like the weights.
/// Weight decay follows timm: none on 1-D tensors (biases, LayerNorm) nor on pos_embed
/// and cls_token.
public final class Optimizer {
    public let config: OptimizerConfig
    public let layout: ParameterLayout
    /// AdamW: exp_avg; SGD: the momentum buffer.
    public let firstMoment: FloatBuffer
    /// AdamW: exp_avg_sq; SGD: nil.
    public let secondMoment: FloatBuffer?
    /// Updates applied so far (AdamW's t).
    public var updates: Int = 0
    /// AdamW under top-k gradients (1-bit Adam's compression stage): `exp_avg_sq` holds the
    /// bias-corrected variance of the last dense step and no longer changes, so an update is
    /// linear in the gradient and a value that arrives late (error feedback) moves its weight
    /// as far as it would have on time. Unfrozen, a gradient sent once in n steps with n
    /// times its size raises √v about √n-fold and moves the weight √n times too little.
    public private(set) var varianceFrozen = false
    /// Each tensor's floats and whether weight decay applies to it.
    let segments: [(range: Range<Int>, decay: Bool)]

    public init(config: OptimizerConfig, layout: ParameterLayout) {
        self.config = config
        self.layout = layout
        firstMoment = FloatBuffer(count: layout.count)
        secondMoment = config.kind == .adamw ? FloatBuffer(count: layout.count) : nil
        segments = layout.tensors.map { t in
            (t.offset ..< t.offset + t.count, Optimizer.decays(name: t.name, shape: t.shape))
        }
    }

    /// timm's rule: parameters with one dimension and the names its models list in
    /// `no_weight_decay()` (pos_embed, cls_token) are not decayed.
    public static func decays(name: String, shape: [Int]) -> Bool {
        if shape.count <= 1 { return false }
        return !["pos_embed", "cls_token", "dist_token"].contains(name)
    }

    /// The moment buffers under checkpoint names (`optimizer.exp_avg` …).
    public var stateBuffers: [(name: String, buffer: FloatBuffer)] {
        switch config.kind {
        case .adamw: return [("optimizer.exp_avg", firstMoment), ("optimizer.exp_avg_sq", secondMoment!)]
        case .sgd: return [("optimizer.momentum_buffer", firstMoment)]
        }
    }

    /// CRC-32 of `params` (this layout's weights), then each moment buffer: tests compare
    /// a worker's replica with the coordinator's state by it.
    public func stateDigest(params: UnsafePointer<Float>) -> UInt32 {
        let n = layout.count
        var crc = Checksum.crc32(UnsafeRawBufferPointer(start: params, count: 4 * n))
        for (_, b) in stateBuffers { crc = Checksum.crc32(continuing: crc, UnsafeRawBufferPointer(start: b.pointer, count: 4 * n)) }
        return crc
    }

    /// Freezes AdamW's variance at its current bias-corrected value (once; SGD: nothing).
    public func freezeVariance() {
        guard hasVariance, !varianceFrozen, let v = secondMoment else { return }
        if updates > 0 {
            VectorOps.scale(v.pointer, Float(1 / (1 - Foundation.pow(config.beta2, Double(updates)))), v.count)
        }
        varianceFrozen = true
    }

    /// A checkpoint's or a replica's frozen state (its `exp_avg_sq` is already corrected).
    public func restoreFrozenVariance(_ frozen: Bool) { varianceFrozen = frozen && hasVariance }

    /// Whether there is a variance to freeze (AdamW; SGD has none).
    public var hasVariance: Bool { config.kind == .adamw }

    /// One update with learning rate `lr` from the gradient `grads` (same layout).
    /// `varianceScale`: with the variance frozen, a factor per tensor (layout order) on √v
    /// (`VarianceTracker.scales`); nil or unfrozen: none.
    /// `estimate`: AdamW's first moment is the workers' shared estimate of their momentum
    /// (`TopKFeedback.estimate`) and `grads` is the merged change to it: m ← m + g instead of
    /// m ← β1·m + (1−β1)·g. Only with a frozen variance (a live one would be fed the changes).
    public func step(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, lr: Double, varianceScale: [Float]? = nil,
                     estimate: Bool = false) {
        updates += 1
        switch config.kind {
        case .adamw: adamW(params, grads, lr: lr, varianceScale: varianceScale?.count == segments.count ? varianceScale : nil,
                           estimate: estimate && varianceFrozen)
        case .sgd: sgd(params, grads, lr: lr)
        }
    }

    /// torch.optim.AdamW: p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
    /// p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε). Frozen: v stays (corrected), and
    /// the denominator is √v · scale + ε with the tensor's scale (1 when none is given).
    /// `estimate` (frozen only): m ← m + g, g being the change to the shared estimate.
    func adamW(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, lr: Double, varianceScale: [Float]? = nil, estimate: Bool = false) {
        let c = config
        let t = Double(updates)
        // m ← a·m + b·g: AdamW's moving average, or the estimate's plain sum.
        let b1 = Float(c.beta1), b2 = Float(c.beta2)
        let a: Float = estimate ? 1 : b1, b: Float = estimate ? 1 : 1 - b1
        let stepSize = Float(lr / (1 - Foundation.pow(c.beta1, t)))
        let invSqrtBC2 = Float(1 / (1 - Foundation.pow(c.beta2, t)).squareRoot())
        let eps = Float(c.eps)
        let m = firstMoment.pointer, v = secondMoment!.pointer
        // Sixteen lanes at a time, then the tail: the same operations in the same order
        // (IEEE sqrt and division are exact per lane, and nothing is fused), so every lane
        // is bit-identical to the scalar loop, which replicas rely on.
        typealias V = SIMD16<Float>
        let frozen = varianceFrozen
        for (s, seg) in segments.enumerated() {
            let keep = seg.decay ? Float(1 - lr * c.weightDecay) : 1
            // x · 1 is x exactly, so an unscaled frozen step is the one it always was.
            let scale = varianceScale?[s] ?? 1
            var i = seg.range.lowerBound
            let end = seg.range.upperBound
            while i + 16 <= end {
                let gi = g.simd(V.self, at: i), pi = p.simd(V.self, at: i)
                let mi = a * m.simd(V.self, at: i) + b * gi
                m.store(mi, at: i)
                let denom: V
                if frozen {
                    denom = v.simd(V.self, at: i).squareRoot() * scale + eps
                } else {
                    let vi = b2 * v.simd(V.self, at: i) + (1 - b2) * gi * gi
                    v.store(vi, at: i)
                    denom = vi.squareRoot() * invSqrtBC2 + eps
                }
                p.store(pi * keep - stepSize * mi / denom, at: i)
                i += 16
            }
            while i < end {
                let gi = g[i]
                let mi = a * m[i] + b * gi
                m[i] = mi
                let denom: Float
                if frozen {
                    denom = v[i].squareRoot() * scale + eps
                } else {
                    let vi = b2 * v[i] + (1 - b2) * gi * gi
                    v[i] = vi
                    denom = vi.squareRoot() * invSqrtBC2 + eps
                }
                p[i] = p[i] * keep - stepSize * mi / denom
                i += 1
            }
        }
    }

    /// torch.optim.SGD (dampening 0): d ← g + wd·p; b ← μ·b + d; d ← d + μ·b (Nesterov)
    /// or b; p ← p − lr·d.
    func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, lr: Double) {
        let c = config
        let mu = Float(c.momentum), rate = Float(lr), nesterov = c.nesterov
        let b = firstMoment.pointer
        for seg in segments {
            let wd = seg.decay ? Float(c.weightDecay) : 0
            for i in seg.range {
                var d = g[i] + wd * p[i]
                if mu != 0 {
                    let bi = mu * b[i] + d
                    b[i] = bi
                    d = nesterov ? d + mu * bi : bi
                }
                p[i] -= rate * d
            }
        }
    }
}
