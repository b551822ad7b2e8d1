import Foundation

/// Keeps a frozen AdamW variance in scale with the gradients (top-k runs).
///
/// Under top-k AdamW's variance is frozen at the end of the dense warm-up (see
/// `Optimizer.freezeVariance`), but the gradients' scale keeps moving: in an uncompressed
/// run of fmnist-6head, √v of the MLP matrices falls to 0.35-0.5 of its epoch-1 value by
/// epoch 5 while the later blocks' qkv rise 1.2-1.5x, so a variance frozen after epoch 1
/// makes most steps about half as long as AdamW's by the end. Workers see their whole
/// local gradient every step, so each sends one mean square per tensor (over its active
/// weights); the coordinator keeps their exponential average with AdamW's β2, bias-corrected
/// as AdamW's variance is, and while the variance is frozen each tensor's √v is scaled by
/// √(ŝ now / ŝ at the freeze): the per-weight shape stays as frozen, each tensor's level
/// follows its gradients. The scales travel in the replicated downlink's update frame, so
/// replicas apply the very same floats.
///
/// A worker's mean square is of its own batch's gradient, which holds more noise than the
/// merged one (its batch is smaller); the ratio to the freeze cancels that as long as the
/// workers' shares stay about what they were.
public struct VarianceTracker: Codable, Sendable, Equatable {
    public var beta2: Double
    /// Σ (1−β2)·β2^(n−i)·ms_i per tensor (layout order), not bias-corrected.
    public var average: [Double]
    /// Steps recorded.
    public var steps: Int = 0
    /// The bias-corrected average when the variance froze (nil: not frozen yet).
    public var atFreeze: [Double]?

    /// A √-ratio outside [1/limit, limit] is clamped: a safety rail against a tensor whose
    /// gradients vanish or explode (measured ratios stay within 0.3-1.6).
    public static let limit: Double = 10

    public init(tensors: Int, beta2: Double) {
        self.beta2 = beta2
        average = [Double](repeating: 0, count: tensors)
    }

    /// Adds one step's mean squares per tensor (the workers' image-weighted mean).
    public mutating func record(_ meanSquares: [Double]) {
        guard meanSquares.count == average.count else { return }
        for i in average.indices { average[i] = beta2 * average[i] + (1 - beta2) * meanSquares[i] }
        steps += 1
    }

    /// The bias-corrected averages (zeros before the first record).
    public var corrected: [Double] {
        guard steps > 0 else { return average }
        let c = 1 - Foundation.pow(beta2, Double(steps))
        return average.map { $0 / c }
    }

    /// Takes the current level as the frozen variance's (once).
    public mutating func freeze() {
        if atFreeze == nil && steps > 0 { atFreeze = corrected }
    }

    /// Per tensor, the factor on √v of the frozen variance: √(ŝ now / ŝ at the freeze),
    /// 1 where either is zero; nil before the freeze.
    public var scales: [Float]? {
        guard let atFreeze else { return nil }
        return zip(corrected, atFreeze).map { now, then in
            guard now > 0, then > 0 else { return 1 }
            return Float(min(Self.limit, max(1 / Self.limit, (now / then).squareRoot())))
        }
    }

    /// The mean square of each tensor of `gradient` (full layout) over its active weights
    /// (`mask` full layout, 1 active, 0 inactive; nil: every weight): sixteen lanes at a
    /// time in Float within blocks of 4096, the blocks summed in Double.
    public static func meanSquares(_ gradient: UnsafePointer<Float>, tensors: [(offset: Int, count: Int)],
                                   mask: UnsafePointer<Float>?) -> [Float] {
        typealias V = SIMD16<Float>
        return tensors.map { t in
            let g = gradient + t.offset, m = mask.map { $0 + t.offset }
            var sum = 0.0, active = 0.0
            var i = 0
            while i < t.count {
                let end = min(t.count, i + 4096)
                var s = V(), n = V()
                while i + 16 <= end {
                    var x = UnsafeRawPointer(g + i).loadUnaligned(as: V.self)
                    if let m {
                        let k = UnsafeRawPointer(m + i).loadUnaligned(as: V.self)
                        x *= k
                        n += k
                    }
                    s += x * x
                    i += 16
                }
                var part = Double(s.sum()), count = m == nil ? 0 : Double(n.sum())
                while i < end {
                    let k = m?[i] ?? 1
                    part += Double(g[i] * k) * Double(g[i] * k)
                    if m != nil { count += Double(k) }
                    i += 1
                }
                sum += part
                active += m == nil ? 0 : count
            }
            let n = m == nil ? Double(t.count) : active
            return n > 0 ? Float(sum / n) : 0
        }
    }
}
