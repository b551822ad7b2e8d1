import Core
import Kernels

/// A heap array of floats with a stable address for the lifetime of the test.
final class Buf {
    let count: Int
    let p: UnsafeMutablePointer<Float>
    init(_ count: Int) {
        self.count = count
        p = .allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
    }
    convenience init(random count: Int, rng: inout Xoshiro256, scale: Float = 1, shift: Float = 0) {
        self.init(count)
        for i in 0 ..< count { p[i] = rng.nextNormal() * scale + shift }
    }
    deinit { p.deallocate() }
    var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    func zero() { p.update(repeating: 0, count: count) }
    func copy() -> Buf { let b = Buf(count); b.p.update(from: p, count: count); return b }
}

func maxAbsDiff(_ a: Buf, _ b: Buf) -> Float {
    var m: Float = 0
    for i in 0 ..< a.count { m = max(m, abs(a.p[i] - b.p[i])) }
    return m
}

func maxAbs(_ a: Buf) -> Float {
    var m: Float = 0
    for i in 0 ..< a.count { m = max(m, abs(a.p[i])) }
    return m
}

/// Relative difference scaled by the larger magnitude in the pair of arrays.
func relDiff(_ a: Buf, _ b: Buf) -> Float {
    maxAbsDiff(a, b) / max(maxAbs(a), maxAbs(b), 1e-20)
}
