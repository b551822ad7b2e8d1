import Foundation

/// ZeroMQ endpoints as users type them. libzmq answers a missing `tcp://` or a bad port
/// with "Invalid argument"; here `HOST:PORT` is taken as `tcp://HOST:PORT` and anything
/// else that is not an endpoint is refused with the form it should have.
public enum Endpoint {
    public enum Role: Sendable { case connect, bind }

    /// Whether only this machine can reach it: tcp on 127.x, ::1 or localhost, ipc, inproc.
    public static func isLoopback(_ endpoint: String) -> Bool {
        if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
        guard endpoint.hasPrefix("tcp://") else { return false }
        var host = String(endpoint.dropFirst(6))
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) } else if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        return host.hasPrefix("127.") || host == "::1" || host == "localhost"
    }

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var text: String
        public var why: String
        public var example: String
        public var description: String { "'\(text)' is not a ZeroMQ endpoint (\(why)): write it as \(example)" }
    }

    /// The endpoint in libzmq's form, or why `text` is not one.
    public static func normalize(_ text: String, role: Role) throws -> String {
        let example = role == .connect ? "tcp://HOST:PORT, e.g. tcp://head-node:5555" : "tcp://ADDRESS:PORT, e.g. tcp://*:5555 or tcp://127.0.0.1:5556"
        func invalid(_ why: String) -> Invalid { Invalid(text: text, why: why, example: example) }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("ipc://") || trimmed.hasPrefix("inproc://") {
            guard trimmed.split(separator: "/", omittingEmptySubsequences: true).count >= 2 else { throw invalid("no path") }
            return trimmed
        }
        var rest = Substring(trimmed)
        if let scheme = trimmed.range(of: "://") {
            let name = trimmed[..<scheme.lowerBound]
            guard name == "tcp" else { throw invalid("svite speaks tcp://, not \(name)://") }
            rest = trimmed[scheme.upperBound...]
        }
        guard let colon = rest.lastIndex(of: ":") else { throw invalid("no port") }
        let host = rest[..<colon], port = rest[rest.index(after: colon)...]
        guard !host.isEmpty else { throw invalid("no host") }
        if role == .connect && host == "*" { throw invalid("'*' is for binding; name the coordinator's host") }
        if !(role == .bind && port == "*") {
            guard let p = Int(port), (1 ... 65535).contains(p) else { throw invalid("the port must be 1 to 65535\(role == .bind ? " or *" : "")") }
        }
        guard !host.contains("/") && !host.contains(" ") else { throw invalid("'\(host)' is not a host name or address") }
        return "tcp://\(host):\(port)"
    }
}
