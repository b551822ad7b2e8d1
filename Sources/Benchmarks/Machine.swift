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
        let cpu = CPUFeatures.current
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let pretty = osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst(12)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } ?? "unknown"
        return MachineInfo(cpu: cpu.modelName, cores: ProcessInfo.processInfo.activeProcessorCount,
                           simd: cpu.summaryFlags, memoryGibibytes: Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824,
                           openBLAS: BLAS.configDescription.trimmingCharacters(in: .whitespaces),
                           openBLASCore: BLAS.coreName, os: pretty)
    }

    public var summary: String {
        "\(cpu), \(cores) cores, \(String(format: "%.0f", memoryGibibytes)) GiB, SIMD \(simd.joined(separator: "/")); \(os); \(openBLAS) (kernels: \(openBLASCore))"
    }
}
