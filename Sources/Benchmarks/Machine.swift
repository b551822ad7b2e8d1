import Foundation
import Kernels

/// What a benchmark ran on, for the record in docs/benchmarks.md.
public struct MachineInfo: Codable, Sendable {
    public var cpu: String
    public var cores: Int
    public var simd: [String]
    public var memoryGibibytes: Double
    public var openBLAS: String
    public var openBLASCore: String
    public var os: String

    public static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String? {
            cpuinfo.split(separator: "\n").first { $0.hasPrefix(name) }
                .flatMap { $0.split(separator: ":", maxSplits: 1).last }
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let flags = Set((field("flags") ?? "").split(separator: " ").map(String.init))
        let simd = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve"].filter { flags.contains($0) }
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let pretty = osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst(12)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } ?? "unknown"
        return MachineInfo(cpu: field("model name") ?? "unknown", cores: ProcessInfo.processInfo.activeProcessorCount,
                           simd: simd, memoryGibibytes: Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824,
                           openBLAS: BLAS.configDescription.trimmingCharacters(in: .whitespaces),
                           openBLASCore: BLAS.coreName, os: pretty)
    }

    public var summary: String {
        "\(cpu), \(cores) cores, \(String(format: "%.0f", memoryGibibytes)) GiB, SIMD \(simd.joined(separator: "/")); \(os); \(openBLAS) (kernels: \(openBLASCore))"
    }
}

/// Wall-clock timing helpers.
public enum Stopwatch {
    public static func seconds(_ body: () -> Void) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    public static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        if s.isEmpty { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
