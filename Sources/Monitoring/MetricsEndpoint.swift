import Coordinator
import FlyingFox
import FlyingSocks
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// GET /metrics over HTTP (FlyingFox, a small HTTP server on BSD sockets), answering with
/// `PrometheusText` of the document `provider` gives; anything else is 404. Runs on its own
/// task until `stop`.
public final class MetricsEndpoint {
    public let host: String
    public private(set) var port: UInt16
    let server: HTTPServer
    var task: Task<Void, any Error>?

    /// `address`: HOST:PORT or :PORT (every interface); port 0 takes a free one.
    public init(address: String, provider: @escaping @Sendable () -> StatusDocument?) throws {
        let parts = address.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let p = UInt16(parts[1]) else {
            throw MetricsEndpointError(message: "--metrics takes HOST:PORT or :PORT, e.g. 127.0.0.1:9464 (got '\(address)')")
        }
        host = parts[0].isEmpty ? "0.0.0.0" : String(parts[0])
        port = p
        let socketAddress: sockaddr_in
        if host == "0.0.0.0" {
            socketAddress = .inet(port: p)
        } else {
            do { socketAddress = try .inet(ip4: host, port: p) } catch {
                throw MetricsEndpointError(message: "--metrics: '\(host)' is not an IPv4 address (\(error))")
            }
        }
        // A port in use fails the bind at once: say so now (FlyingFox would only time out
        // waiting for its listener).
        if let problem = Self.bindProblem(socketAddress) {
            throw MetricsEndpointError(message: "--metrics \(address): \(problem)")
        }
        server = HTTPServer(address: socketAddress, timeout: 10, logger: .disabled)
        let handler = MetricsHandler(provider: provider)
        let ready = DispatchSemaphore(value: 0)
        // What the listener task found: the port it bound, or why it could not.
        let outcome = Mutex<Result<UInt16, any Error>>(.success(p))
        let server = self.server
        task = Task.detached {
            await server.appendRoute("GET /metrics", to: handler)
            try await server.run()
        }
        Task.detached {
            do {
                try await server.waitUntilListening(timeout: 5)
                if case let .ip4(_, port)? = await server.listeningAddress { outcome.withLock { $0 = .success(port) } }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            ready.signal()
        }
        ready.wait()
        switch outcome.withLock({ $0 }) {
        case let .success(bound):
            port = bound
        case let .failure(failure):
            task?.cancel()
            throw MetricsEndpointError(message: "cannot serve /metrics on \(address): \(failure)")
        }
    }

    /// Why `address` cannot be bound (nil: it can), tried with a socket of its own.
    static func bindProblem(_ address: sockaddr_in) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = address
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc != 0 else { return nil }
        let e = errno
        let port = UInt16(bigEndian: address.sin_port)
        switch e {
        case EADDRINUSE:
            return "address in use: another process listens on port \(port) (`ss -ltnp 'sport = :\(port)'` names it); choose another port"
        case EACCES:
            return "permission denied: ports below 1024 need root; choose a port such as 9464"
        case EADDRNOTAVAIL:
            return "this machine has no such address; use :\(port) for every interface"
        default:
            return String(cString: strerror(e))
        }
    }

    public var url: String { "http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)/metrics" }

    public func stop() {
        task?.cancel()
        task = nil
    }

    deinit { task?.cancel() }
}

struct MetricsHandler: HTTPHandler {
    let provider: @Sendable () -> StatusDocument?

    func handleRequest(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let doc = provider() else {
            return HTTPResponse(statusCode: .serviceUnavailable, headers: [.contentType: "text/plain"], body: Data("the coordinator has not started its loop yet\n".utf8))
        }
        return HTTPResponse(statusCode: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: Data(PrometheusText.render(doc).utf8))
    }
}

public struct MetricsEndpointError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
