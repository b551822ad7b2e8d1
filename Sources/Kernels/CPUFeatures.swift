import Foundation

/// An instruction-set level for matrix products, ordered from least to most capable.
/// Kernel choices are made from these levels, read off the CPU's feature flags, and
/// never from a table of CPU models: a new model with known features is served well.
public enum ISALevel: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case sse3 = 0, avx, avx2, avx512, avx512bf16, amx

    public static func < (a: ISALevel, b: ISALevel) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .sse3: "SSE3"
        case .avx: "AVX"
        case .avx2: "AVX2+FMA"
        case .avx512: "AVX-512"
        case .avx512bf16: "AVX512-BF16"
        case .amx: "AMX-BF16"
        }
    }

    /// Whether bf16 matrix products run natively (dot-product instructions or tiles).
    public var hasNativeBF16: Bool { self >= .avx512bf16 }
}

/// What the CPU can do, from the kernel's view of it (`/proc/cpuinfo` flags, which the
/// kernel only lists when the OS also enables the state: AVX-512 and AMX registers).
public struct CPUFeatures: Sendable, Equatable {
    public var flags: Set<String>
    public var modelName: String

    public init(flags: Set<String>, modelName: String = "unknown") {
        self.flags = flags; self.modelName = modelName
    }

    /// Parses the text of `/proc/cpuinfo` (the first processor's `flags` line).
    public init(cpuinfo: String) {
        func field(_ name: String) -> String? {
            cpuinfo.split(separator: "\n").first { $0.hasPrefix(name) }
                .flatMap { $0.split(separator: ":", maxSplits: 1).last }
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        self.init(flags: Set((field("flags") ?? field("Features") ?? "").split(separator: " ").map(String.init)),
                  modelName: field("model name") ?? "unknown")
    }

    /// This machine's features, read once.
    public static let current: CPUFeatures = {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return CPUFeatures(cpuinfo: text)
    }()

    public func has(_ flag: String) -> Bool { flags.contains(flag) }

    /// The best level every needed flag of which is present.
    public var level: ISALevel {
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(has)
        if avx512 && has("amx_tile") && has("amx_bf16") { return .amx }
        if avx512 && has("avx512_bf16") { return .avx512bf16 }
        if avx512 { return .avx512 }
        if has("avx2") && has("fma") { return .avx2 }
        if has("avx") { return .avx }
        return .sse3
    }

    /// The flags worth printing, in a fixed order.
    public var summaryFlags: [String] {
        ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve"].filter(has)
    }
}

/// OpenBLAS's kernel families (its "core names") by the level they need. OpenBLAS
/// picks a family from its own table of CPU models; a CPU newer than the table gets an
/// old generic family. This maps names back to levels, so svite can see when that
/// happened and name the family that fits the features.
public enum OpenBLASCore {
    /// The level a core name's kernels use; nil for a name not known here.
    public static func level(ofCore name: String) -> ISALevel? {
        switch name.lowercased() {
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron", "opteron_sse3",
             "barcelona", "bobcat", "athlon", "katmai", "coppermine", "northwood", "banias", "nano", "generic":
            return .sse3
        case "sandybridge", "bulldozer", "piledriver":
            return .avx
        case "haswell", "zen", "steamroller", "excavator":
            return .avx2
        case "skylakex":
            return .avx512
        case "cooperlake":
            return .avx512bf16
        case "sapphirerapids":
            return .amx
        default:
            return nil
        }
    }

    /// The core name whose kernels fit a CPU of this level best, among those that
    /// Debian's OpenBLAS 0.3.21 ships (it has no SapphireRapids family).
    public static func bestCore(for level: ISALevel) -> String {
        switch level {
        case .amx, .avx512bf16: "Cooperlake"
        case .avx512: "SkylakeX"
        case .avx2: "Haswell"
        case .avx: "Sandybridge"
        case .sse3: "Prescott"
        }
    }
}
