/// Central finite differences for checking backward passes.
///
/// Everything here runs in Float (the kernels' precision), so the bound has to absorb
/// float rounding: a loss L computed in Double from Float outputs carries noise of about
/// ε_f·|L| (ε_f ≈ 6e-8), which the difference quotient amplifies by 1/(2h); the
/// truncation error is O(h²·|L'''|). Each comparison therefore passes when
/// |analytic − numeric| ≤ atol + rtol·|numeric|, with atol chosen above the rounding
/// noise for the step used (tests state their numbers).
public enum GradientCheck {
    /// (L(x + h) − L(x − h)) / (x₊ − x₋) at element i of x, using the perturbations as
    /// actually rounded to Float. Restores x[i].
    public static func centralDifference(at i: Int, of x: UnsafeMutablePointer<Float>, step h: Float,
                                         _ loss: () -> Double) -> Double {
        let saved = x[i]
        let plus = saved + h, minus = saved - h
        x[i] = plus
        let lp = loss()
        x[i] = minus
        let lm = loss()
        x[i] = saved
        return (lp - lm) / (Double(plus) - Double(minus))
    }

    public struct Report: CustomStringConvertible, Sendable {
        public var checked = 0
        public var failures = 0
        /// max over elements of |a − n| / (atol + rtol·|n|): ≤ 1 passes.
        public var worstRatio = 0.0
        public var worstIndex = -1
        public var worstAnalytic = 0.0
        public var worstNumeric = 0.0
        /// max of |a − n| / max(|a|, |n|) over elements whose gradient is significant
        /// (max(|a|, |n|) ≥ 10·atol), for reporting; near-zero entries are covered by atol.
        public var maxRelativeError = 0.0

        public init() {}
        public var passed: Bool { failures == 0 && checked > 0 }
        public var description: String {
            "checked \(checked), failures \(failures), max rel err \(maxRelativeError), worst at \(worstIndex): analytic \(worstAnalytic) numeric \(worstNumeric)"
        }

        public mutating func add(index: Int, analytic a: Double, numeric n: Double, atol: Double, rtol: Double) {
            checked += 1
            let err = abs(a - n)
            let ratio = err / (atol + rtol * abs(n))
            if ratio > 1 || !ratio.isFinite { failures += 1 }
            if ratio > worstRatio || !ratio.isFinite {
                worstRatio = ratio; worstIndex = index; worstAnalytic = a; worstNumeric = n
            }
            let magnitude = max(abs(a), abs(n))
            if magnitude >= 10 * atol { maxRelativeError = max(maxRelativeError, err / magnitude) }
        }
    }

    /// Checks analytic[i] against the central difference at each index in `indices`.
    public static func check(analytic: UnsafePointer<Float>, input x: UnsafeMutablePointer<Float>,
                             indices: some Sequence<Int>, step h: Float, atol: Double, rtol: Double,
                             loss: () -> Double) -> Report {
        var report = Report()
        for i in indices {
            let n = centralDifference(at: i, of: x, step: h, loss)
            report.add(index: i, analytic: Double(analytic[i]), numeric: n, atol: atol, rtol: rtol)
        }
        return report
    }

    /// Σ w_i·y_i in Double: a loss whose gradient with respect to y is w.
    public static func weightedSum(_ y: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ n: Int) -> Double {
        var s = 0.0
        for i in 0 ..< n { s += Double(y[i]) * Double(w[i]) }
        return s
    }
}
