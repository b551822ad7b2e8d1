/// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_).
public enum GradientClipping {
    /// ‖g‖₂ over `count` floats, accumulated in Double.
    public static func norm(_ g: UnsafePointer<Float>, count: Int) -> Double {
        var total = 0.0
        var i = 0
        while i < count {
            let end = min(count, i + 4096)
            var s = SIMD8<Float>()
            var j = i
            while j + 8 <= end {
                let x = UnsafeRawPointer(g + j).loadUnaligned(as: SIMD8<Float>.self)
                s += x * x
                j += 8
            }
            var part = Double(s.sum())
            while j < end { part += Double(g[j] * g[j]); j += 1 }
            total += part
            i = end
        }
        return total.squareRoot()
    }

    /// Scales g so its norm is at most maxNorm; returns the norm before clipping.
    @discardableResult
    public static func clip(_ g: UnsafeMutablePointer<Float>, count: Int, maxNorm: Double) -> Double {
        let n = norm(g, count: count)
        if maxNorm > 0 && n > maxNorm {
            VectorOps.scale(g, Float(maxNorm / (n + 1e-6)), count)
        }
        return n
    }
}
