/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64) whose
/// whole state is four words, so it can be checkpointed and restored exactly.
public struct Xoshiro256: RandomNumberGenerator, Sendable, Equatable, Codable {
    public var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var sm = seed
        func splitMix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            var z = sm
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    @inlinable
    public mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    @inlinable @inline(__always)
    func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1) with 24 random bits.
    @inlinable
    public mutating func nextUniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in (0, 1], never 0, for logarithms.
    @inlinable
    public mutating func nextOpenUniform() -> Double {
        (Double(next() >> 11) + 1) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Standard normal by Box–Muller (one of the pair is used, keeping the state simple).
    public mutating func nextNormal() -> Float {
        let u1 = nextOpenUniform(), u2 = nextOpenUniform()
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    /// Standard Gumbel, −log(−log u) with u strictly inside (0, 1), so always finite.
    public mutating func nextGumbel() -> Float {
        let u = (Double(next() >> 11) + 0.5) * (1.0 / 9_007_199_254_740_992.0)
        return Float(-_log(-_log(u)))
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang's squeeze (shape < 1: Gamma(shape + 1)·u^(1/shape)).
    public mutating func nextGamma(shape: Double) -> Double {
        if shape < 1 { return nextGamma(shape: shape + 1) * _exp(_log(nextOpenUniform()) / shape) }
        let d = shape - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat { x = Double(nextNormal()); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = nextOpenUniform()
            if u < 1 - 0.0331 * x * x * x * x || _log(u) < 0.5 * x * x + d * (1 - v + _log(v)) { return d * v }
        }
    }

    /// Beta(α, α), as X / (X + Y) of two Gamma(α) (mixup's and CutMix's λ).
    public mutating func nextBeta(_ alpha: Double) -> Double {
        let x = nextGamma(shape: alpha), y = nextGamma(shape: alpha)
        return x + y > 0 ? x / (x + y) : 0.5
    }

    /// Normal(0, std²) truncated to ±2·std by rejection.
    public mutating func nextTruncatedNormal(std: Float) -> Float {
        while true {
            let z = nextNormal()
            if abs(z) <= 2 { return z * std }
        }
    }

    public static func == (a: Xoshiro256, b: Xoshiro256) -> Bool {
        a.state.0 == b.state.0 && a.state.1 == b.state.1 && a.state.2 == b.state.2 && a.state.3 == b.state.3
    }

    public init(from decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        state = (try c.decode(UInt64.self), try c.decode(UInt64.self), try c.decode(UInt64.self), try c.decode(UInt64.self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(state.0); try c.encode(state.1); try c.encode(state.2); try c.encode(state.3)
    }
}

#if canImport(Glibc)
import Glibc
@usableFromInline func _log(_ x: Double) -> Double { Glibc.log(x) }
@usableFromInline func _exp(_ x: Double) -> Double { Glibc.exp(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#elseif canImport(Darwin)
import Darwin
@usableFromInline func _log(_ x: Double) -> Double { Darwin.log(x) }
@usableFromInline func _exp(_ x: Double) -> Double { Darwin.exp(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif

/// Seeds for independent random streams derived from the run seed: every random choice
/// (shuffle, augmentation of one image in one epoch, initialisation) has its own stream,
/// so results do not depend on how work is split across threads, ranks or restarts.
public enum StreamSeed {
    public static let shuffle: UInt64 = 1
    public static let augmentation: UInt64 = 2
    public static let initialization: UInt64 = 3
    public static let topology: UInt64 = 4
    /// SViTE+'s Gumbel noise, per (epoch, image).
    public static let tokenNoise: UInt64 = 5
    /// Mixup/CutMix: whether, which, λ, partner and box, per (epoch, image).
    public static let mixing: UInt64 = 6
    /// TrivialAugment's operation and magnitude, per (epoch, image).
    public static let trivialAugment: UInt64 = 7

    public static func mix(_ values: UInt64...) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3
        for v in values {
            h ^= v &+ 0x9E37_79B9_7F4A_7C15 &+ (h << 6) &+ (h >> 2)
            h = (h ^ (h >> 33)) &* 0xFF51_AFD7_ED55_8CCD
            h = (h ^ (h >> 33)) &* 0xC4CE_B9FE_1A85_EC53
            h ^= h >> 33
        }
        return h
    }
}
