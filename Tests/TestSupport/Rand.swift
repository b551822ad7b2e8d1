/// A small seeded generator for test data (splitmix64).
public struct SplitMix {
    public var state: UInt64
    public init(_ seed: UInt64) { state = seed }
    public init(s: UInt64) { state = s }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [−1, 1).
    public mutating func float() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

public typealias Rand = SplitMix
