import Foundation
import Testing
import TestSupport

/// docs/architecture.md's module table is the module graph: every module of Sources is in
/// it, each depends (in Package.swift) only on modules listed before it, and the worker's
/// row names exactly the modules it links.
@Suite("architecture doc")
struct ArchitectureTests {
    /// Package.swift's targets and their dependencies on other targets of the package.
    func packageGraph() throws -> [String: Set<String>] {
        let package = try String(contentsOfFile: "\(repoRoot)/Package.swift", encoding: .utf8)
        let targetStart = try Regex(#"\.(?:target|executableTarget|testTarget|systemLibrary)\(name: "(\w+)""#)
        let quoted = try Regex(#""(\w+)""#), product = try Regex(#"\.product\([^)]*\)"#)
        let starts = package.matches(of: targetStart)
        var graph: [String: Set<String>] = [:]
        for (i, m) in starts.enumerated() {
            let name = String(m.output[1].substring!)
            let end = i + 1 < starts.count ? starts[i + 1].range.lowerBound : package.endIndex
            var chunk = String(package[m.range.upperBound ..< end])
            guard let deps = chunk.range(of: "dependencies:") else { graph[name] = []; continue }
            chunk = String(chunk[deps.upperBound...]).components(separatedBy: "swiftSettings")[0]
                .components(separatedBy: "path:")[0].replacing(product, with: "")
            graph[name] = Set(chunk.matches(of: quoted).map { String($0.output[1].substring!) })
        }
        return graph
    }

    /// The Swift modules of Sources (the C ones are module maps over Debian's libraries).
    func swiftModules() throws -> [String] {
        let fm = FileManager.default
        return try fm.contentsOfDirectory(atPath: "\(repoRoot)/Sources").filter {
            !$0.hasPrefix(".") && !fm.fileExists(atPath: "\(repoRoot)/Sources/\($0)/module.modulemap")
        }.sorted()
    }

    /// The table's modules in order, and each row's text.
    func documentedModules() throws -> [(name: String, row: String)] {
        let doc = try String(contentsOfFile: "\(repoRoot)/docs/architecture.md", encoding: .utf8)
        let row = try Regex(#"^\| `(\w+)` \| (.*) \|$"#)
        return doc.split(separator: "\n").compactMap { line in
            (try? row.wholeMatch(in: String(line))).flatMap { m in m.map { (String($0.output[1].substring!), String($0.output[2].substring!)) } }
        }
    }

    @Test func theModuleTableIsTheModuleGraph() throws {
        let graph = try packageGraph()
        let documented = try documentedModules()
        let order = documented.map(\.name)
        let fm = FileManager.default
        let sources = try swiftModules()
        #expect(sources.count >= 15)
        #expect(Set(order) == Set(sources), "in Sources, not in the table: \(Set(sources).subtracting(order).sorted()); in the table, not in Sources: \(Set(order).subtracting(sources).sorted())")
        #expect(order.count == Set(order).count, "a module listed twice: \(order)")
        for (i, name) in order.enumerated() {
            let ownDeps = (graph[name] ?? []).filter { sources.contains($0) }
            let later = ownDeps.filter { dep in (order.firstIndex(of: dep) ?? .max) >= i }
            #expect(later.isEmpty, "\(name) depends on \(later.sorted()), listed at or after it in docs/architecture.md")
        }
    }

    /// "links A, B, …: not X or Y" in the worker's row is what Package.swift gives it.
    @Test func theWorkersLinksAreAsDocumented() throws {
        let graph = try packageGraph()
        let row = try #require(try documentedModules().first { $0.name == "Worker" }?.row)
        let links = try #require(row.range(of: "links ")).upperBound
        let listed = row[links...].prefix { $0 != ":" }.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let sources = try swiftModules()
        let linked = (graph["Worker"] ?? []).filter { sources.contains($0) }
        #expect(Set(listed) == linked, "the row says \(listed.sorted()), Package.swift \(linked.sorted())")
        #expect(!linked.contains("Training") && !linked.contains("Coordinator"))
    }
}
