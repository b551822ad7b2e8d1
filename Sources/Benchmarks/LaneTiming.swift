import Core
import Kernels

/// Operands and timing for the one-lane benchmarks (`bench gemm`, `bench sparse`):
/// uniform values in [−0.5, 0.5), and the best of `repeats` runs after one untimed.
struct LaneTiming {
    let repeats: Int
    var rng: Xoshiro256

    init(repeats: Int, seed: UInt64) {
        self.repeats = repeats
        rng = Xoshiro256(seed: seed)
    }

    mutating func buffer(_ n: Int) -> FloatBuffer { FloatBuffer(uniformCount: n, rng: &rng) }

    func bestSeconds(_ body: () -> Void) -> Double { Stopwatch.best(of: repeats, body) }
}
