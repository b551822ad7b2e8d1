/// Keys whose values differ between two configs, as `section.key` (nested keys joined
/// with dots), read from their YAML so every key the tables write is compared.
extension RunConfig {
    public struct Difference: Sendable, Equatable {
        public var key: String
        public var value: String
        public var other: String
    }

    /// The keys where `self` and `other` differ: this config's value, then the other's.
    public func differences(from other: RunConfig) -> [Difference] {
        let a = Self.flatten(yaml), b = Self.flatten(other.yaml)
        return Set(a.keys).union(b.keys).sorted().compactMap { k in
            a[k] == b[k] ? nil : Difference(key: k, value: a[k] ?? "(absent)", other: b[k] ?? "(absent)")
        }
    }

    /// Block YAML as the config tables write it (two-space indents, `key: value` or
    /// `key:` opening a mapping) to `a.b.c: value`.
    public static func flatten(_ yaml: String) -> [String: String] {
        var out: [String: String] = [:]
        var path: [(indent: Int, key: String)] = []
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: true) {
            let indent = line.prefix { $0 == " " }.count
            let text = line.dropFirst(indent)
            guard !text.hasPrefix("#"), let colon = text.firstIndex(of: ":") else { continue }
            let key = String(text[..<colon])
            let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            while let last = path.last, last.indent >= indent { path.removeLast() }
            let full = (path.map(\.key) + [key]).joined(separator: ".")
            if value.isEmpty { path.append((indent, key)) } else { out[full] = value }
        }
        return out
    }
}
