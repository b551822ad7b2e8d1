import Foundation
import Yams

/// A configuration problem, always naming the file and the key (as a dotted path) so a
/// user can find the line to fix.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var key: String
    public var message: String
    /// Further problems found in the same reading (a config with two typos names both).
    public var others: [ConfigError] = []

    public init(file: String, key: String, message: String) {
        self.file = file; self.key = key; self.message = message
    }

    /// This problem and the others, one level deep.
    public var all: [ConfigError] {
        var first = self
        first.others = []
        return [first] + others.flatMap(\.all)
    }

    public var description: String {
        all.map { e in e.key.isEmpty ? "\(e.file): \(e.message)" : "\(e.file): key '\(e.key)': \(e.message)" }
            .joined(separator: "\n")
    }
}

/// Reads on past a bad key so that one run of the reader reports every problem.
public struct ConfigErrors {
    public private(set) var list: [ConfigError] = []
    public init() {}

    /// The value, or nil with the problem noted.
    @discardableResult
    public mutating func attempt<T>(_ body: () throws -> T) throws -> T? {
        do { return try body() } catch let e as ConfigError {
            list.append(contentsOf: e.all)
            return nil
        }
    }

    /// Throws the problems noted so far as one error.
    public func throwIfAny() throws {
        guard var first = list.first else { return }
        first.others = Array(list.dropFirst())
        throw first
    }
}

/// A strict view of one YAML mapping: typed getters that record which keys were read,
/// and `finish()` that rejects every key nobody asked for (with a did-you-mean).
public final class ConfigMapping {
    public let file: String
    public let path: String
    private var values: [String: Node] = [:]
    private var order: [String] = []
    private var used = Set<String>()

    public init(node: Node?, file: String, path: String) throws {
        self.file = file
        self.path = path
        guard let node else { return }
        guard case .mapping(let mapping) = node else {
            throw ConfigError(file: file, key: path, message: "expected a mapping of keys to values")
        }
        for (k, v) in mapping {
            guard let key = k.string else {
                throw ConfigError(file: file, key: path, message: "keys must be strings")
            }
            if values[key] != nil {
                throw ConfigError(file: file, key: qualified(key), message: "appears twice")
            }
            values[key] = v
            order.append(key)
        }
    }

    /// Parses YAML text; an empty document is an empty mapping.
    public static func parse(yaml: String, file: String) throws -> ConfigMapping {
        do {
            let node = try Yams.compose(yaml: yaml)
            return try ConfigMapping(node: node, file: file, path: "")
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(file: file, key: "", message: "not valid YAML: \(error)")
        }
    }

    public func qualified(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// An error about one key of this mapping, named by its full dotted path.
    public func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, key: qualified(key), message: message)
    }

    public var keys: [String] { order }

    public func has(_ key: String) -> Bool { values[key] != nil }

    private func scalar(_ key: String) throws -> String? {
        used.insert(key)
        guard let node = values[key] else { return nil }
        guard case .scalar(let s) = node else {
            throw ConfigError(file: file, key: qualified(key), message: "expected a single value, found a list or mapping")
        }
        return s.string
    }

    public func int(_ key: String) throws -> Int? {
        guard let s = try scalar(key) else { return nil }
        guard let v = Int(s.replacingOccurrences(of: "_", with: "")) else {
            throw ConfigError(file: file, key: qualified(key), message: "expected an integer, found '\(s)'")
        }
        return v
    }

    public func double(_ key: String) throws -> Double? {
        guard let s = try scalar(key) else { return nil }
        guard let v = Double(s.replacingOccurrences(of: "_", with: "")), v.isFinite else {
            throw ConfigError(file: file, key: qualified(key), message: "expected a number, found '\(s)'")
        }
        return v
    }

    public func string(_ key: String) throws -> String? { try scalar(key) }

    /// One of an enumeration's raw values; an unknown one is an error listing the known.
    public func choice<T: RawRepresentable & CaseIterable>(_ key: String, as _: T.Type = T.self) throws -> T? where T.RawValue == String {
        guard let s = try string(key) else { return nil }
        guard let v = T(rawValue: s) else {
            throw error(key, "unknown value '\(s)'; known: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return v
    }

    /// A list of numbers (`[0.5, 0.5]`), or one number standing for a list of one.
    public func doubles(_ key: String) throws -> [Double]? {
        used.insert(key)
        guard let node = values[key] else { return nil }
        let items: [Node]
        switch node {
        case .scalar: items = [node]
        case .sequence(let seq): items = Array(seq)
        case .mapping: throw ConfigError(file: file, key: qualified(key), message: "expected a number or a list of numbers, found a mapping")
        case .alias: throw ConfigError(file: file, key: qualified(key), message: "aliases are not supported")
        }
        return try items.map { item in
            guard case .scalar(let s) = item, let v = Double(s.string), v.isFinite else {
                throw ConfigError(file: file, key: qualified(key), message: "expected a list of numbers, found '\(item.string ?? "a list or mapping")'")
            }
            return v
        }
    }

    /// A list of plain values (a single value stands for a list of one).
    public func scalars(_ key: String) throws -> [String]? {
        used.insert(key)
        guard let node = values[key] else { return nil }
        switch node {
        case .scalar(let s): return [s.string]
        case .sequence(let seq):
            return try seq.map { item in
                guard case .scalar(let s) = item else { throw error(key, "expected a list of values, found a nested list or mapping") }
                return s.string
            }
        default: throw error(key, "expected a list of values")
        }
    }

    /// A list of mappings, each checked strictly by its reader.
    public func mappings(_ key: String) throws -> [ConfigMapping]? {
        used.insert(key)
        guard let node = values[key] else { return nil }
        guard case .sequence(let seq) = node else { throw error(key, "expected a list") }
        return try seq.enumerated().map { i, item in try ConfigMapping(node: item, file: file, path: "\(qualified(key))[\(i)]") }
    }

    /// True when the key holds a mapping (as opposed to a scalar such as `none`).
    public func isMapping(_ key: String) -> Bool {
        if case .mapping = values[key] { return true }
        return false
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let s = try scalar(key) else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigError(file: file, key: qualified(key), message: "expected true or false, found '\(s)'")
        }
    }

    public func mapping(_ key: String) throws -> ConfigMapping? {
        used.insert(key)
        guard let node = values[key] else { return nil }
        return try ConfigMapping(node: node, file: file, path: qualified(key))
    }

    /// Rejects keys that no getter asked for.
    public func finish() throws {
        var errors = ConfigErrors()
        for key in order where !used.contains(key) {
            let known = used.sorted()
            var message = "unknown key"
            if let close = known.min(by: { editDistance($0, key) < editDistance($1, key) }),
               editDistance(close, key) <= max(2, key.count / 3) {
                message += "; did you mean '\(close)'?"
            } else if !known.isEmpty {
                message += "; known keys here: \(known.joined(separator: ", "))"
            }
            try errors.attempt { throw ConfigError(file: file, key: qualified(key), message: message) }
        }
        try errors.throwIfAny()
    }
}

/// Levenshtein distance: how many one-character edits turn one name into the other.
public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0 ... b.count), cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1 ... a.count {
        cur[0] = i
        for j in 1 ... b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

/// `--set key=value` overrides: dotted keys into the YAML tree, values parsed as YAML
/// (so `--set data.mean=[0.5]` gives a list). Applied before validation, so a mistyped
/// key is rejected like one in the file.
public enum ConfigOverrides {
    public static func apply(_ overrides: [String], to root: Node?, file: String) throws -> Node {
        var root = root ?? Node.mapping(Node.Mapping([]))
        for text in overrides {
            guard let eq = text.firstIndex(of: "=") else {
                throw ConfigError(file: "--set", key: text, message: "expected key=value, e.g. --set training.epochs=3")
            }
            let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
            let valueText = String(text[text.index(after: eq)...])
            let path = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !key.isEmpty, !path.contains(where: \.isEmpty) else {
                throw ConfigError(file: "--set", key: key, message: "empty key segment in '\(key)'")
            }
            let value: Node
            do {
                value = try Yams.compose(yaml: valueText) ?? Node("", Tag(.null))
            } catch {
                throw ConfigError(file: "--set", key: key, message: "value is not valid YAML: \(valueText)")
            }
            root = try set(root, path[...], value, key: key)
        }
        return root
    }

    static func set(_ node: Node, _ path: ArraySlice<String>, _ value: Node, key: String) throws -> Node {
        guard let head = path.first else { return value }
        guard case .mapping(var mapping) = node else {
            throw ConfigError(file: "--set", key: key, message: "'\(head)' is inside a value that is not a mapping")
        }
        let child = mapping[head] ?? Node.mapping(Node.Mapping([]))
        mapping[head] = try set(child, path.dropFirst(), value, key: key)
        return .mapping(mapping)
    }
}

// MARK: sections declared once

/// One key of a config section, declared once: its name, how it is read into the section
/// (with its own checks) and how it is written back as YAML (nil: left out, e.g. an unset
/// option). A section's table of keys is its parser, its YAML writer and its documentation
/// check (a test holds the README's config block to it).
public struct ConfigKey<Section>: Sendable {
    public let name: String
    /// A missing required key is an error.
    public let required: Bool
    let read: @Sendable (ConfigMapping, inout Section) throws -> Void
    let write: @Sendable (Section) -> String?

    /// A key with its own reader and writer (lists, nested mappings, keys that set several fields).
    public init(_ name: String, required: Bool = false,
                read: @escaping @Sendable (ConfigMapping, inout Section) throws -> Void,
                write: @escaping @Sendable (Section) -> String?) {
        self.name = name; self.required = required; self.read = read; self.write = write
    }

    /// A plain value; `check` returns what is wrong with a value read from the file (nil: fine).
    public static func value<T: ConfigValue>(_ name: String, _ field: WritableKeyPath<Section, T> & Sendable, required: Bool = false,
                                             check: (@Sendable (T) -> String?)? = nil) -> ConfigKey {
        ConfigKey(name, required: required, read: { m, s in
            guard let v = try T.read(m, name) else {
                if required { throw m.error(name, "missing (required)") }
                return
            }
            if let problem = check?(v) { throw m.error(name, problem) }
            s[keyPath: field] = v
        }, write: { s in s[keyPath: field].yamlText })
    }

    /// An optional value: written only when set.
    public static func optional<T: ConfigValue>(_ name: String, _ field: WritableKeyPath<Section, T?> & Sendable,
                                                check: (@Sendable (T) -> String?)? = nil) -> ConfigKey {
        ConfigKey(name, read: { m, s in
            guard let v = try T.read(m, name) else { return }
            if let problem = check?(v) { throw m.error(name, problem) }
            s[keyPath: field] = v
        }, write: { s in s[keyPath: field]?.yamlText })
    }
}

/// A value a config key can hold, read strictly from a mapping and written as YAML.
public protocol ConfigValue: Sendable {
    static func read(_ m: ConfigMapping, _ key: String) throws -> Self?
    var yamlText: String { get }
}

extension Int: ConfigValue {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> Int? { try m.int(key) }
    public var yamlText: String { "\(self)" }
}
extension Double: ConfigValue {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> Double? { try m.double(key) }
    public var yamlText: String { "\(self)" }
}
extension Bool: ConfigValue {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> Bool? { try m.bool(key) }
    public var yamlText: String { "\(self)" }
}
extension String: ConfigValue {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> String? { try m.string(key) }
    public var yamlText: String { self }
}
extension Array: ConfigValue where Element == Double {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> [Double]? { try m.doubles(key) }
    public var yamlText: String { "\(self)" }
}

/// An enumeration whose raw values are the YAML spellings; an unknown one is an error
/// listing the known ones.
public protocol ConfigChoice: ConfigValue, RawRepresentable, CaseIterable where RawValue == String {}
extension ConfigChoice {
    public static func read(_ m: ConfigMapping, _ key: String) throws -> Self? { try m.choice(key, as: Self.self) }
    public var yamlText: String { rawValue }
}

/// A config section: a table of keys and the checks that span several of them.
public protocol ConfigSection: Sendable {
    /// The section's key in the config file.
    static var sectionName: String { get }
    static var keys: [ConfigKey<Self>] { get }
    /// The defaults (every key of the table not in the file keeps its value here).
    static var defaults: Self { get }
    /// Checks across keys, after every key was read; errors name the key to change.
    func check(_ m: ConfigMapping) throws
}

extension ConfigSection {
    public func check(_ m: ConfigMapping) throws {}

    /// Reads the section (nil: absent, the defaults); every unknown key is an error.
    public static func parse(_ m: ConfigMapping?) throws -> Self {
        var c = defaults
        guard let m else { return c }
        var errors = ConfigErrors()
        for key in keys { try errors.attempt { try key.read(m, &c) } }
        try errors.attempt { try m.finish() }
        try errors.throwIfAny()
        try c.check(m)
        return c
    }

    /// The section as YAML lines, every key written out (unset options left out).
    public var yaml: String {
        var s = "\(Self.sectionName):\n"
        for key in Self.keys {
            // A nested mapping's text starts with its own line break.
            if let text = key.write(self) { s += "  \(key.name):\(text.hasPrefix("\n") ? "" : " ")\(text)\n" }
        }
        return s
    }

    public static var keyNames: [String] { keys.map(\.name) }
}
