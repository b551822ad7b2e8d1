import Testing
@testable import Transport
#if canImport(Glibc)
import Glibc
#endif

@Suite("transport")
struct TransportTests {
    @Test func routerAndDealerTalkOnLoopback() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket.coordinatorRouter(ctx, maxMessageBytes: 1 << 20, heartbeatMs: 500)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        #expect(endpoint.hasPrefix("tcp://127.0.0.1:") && !endpoint.hasSuffix(":*"))
        let dealer = try ZMQSocket.workerDealer(ctx, identity: "worker-a", maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try dealer.connect(endpoint)
        try dealer.send([[1, 2, 3]])
        #expect(try Poller.readable([router], timeoutMs: 2000) == [true])
        let msg = try router.receive()!
        #expect(msg == [Array("worker-a".utf8), [1, 2, 3]])
        try router.send([Array("worker-a".utf8), [9], []])
        #expect(try Poller.readable([dealer], timeoutMs: 2000) == [true])
        #expect(try dealer.receive() == [[9], []])
        #expect(try dealer.receive() == nil)
        dealer.close(); router.close()
    }

    @Test func unknownPeersAreAnErrorNotASilentDrop() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket.coordinatorRouter(ctx, maxMessageBytes: 1 << 20, heartbeatMs: 500)
        _ = try router.bind("tcp://127.0.0.1:*")
        do {
            try router.send([Array("nobody".utf8), [1]])
            Issue.record("send to an unknown peer should fail")
        } catch let e as ZMQError {
            #expect(e.isUnreachable, "\(e)")
            #expect(e.description.contains("zmq_send"))
        }
    }

    @Test func oversizedMessagesAreDropped() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket.coordinatorRouter(ctx, maxMessageBytes: 1000, heartbeatMs: 500)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let big = try ZMQSocket.workerDealer(ctx, identity: "big", maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try big.connect(endpoint)
        try big.send([[UInt8](repeating: 1, count: 5000)])
        #expect(try Poller.readable([router], timeoutMs: 300) == [false])
        #expect(try router.receive() == nil)
        // A well-behaved peer still gets through.
        let small = try ZMQSocket.workerDealer(ctx, identity: "small", maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try small.connect(endpoint)
        try small.send([[7]])
        #expect(try Poller.readable([router], timeoutMs: 2000) == [true])
        #expect(try router.receive()?.last == [7])
    }

    @Test func badEndpointsSayWhichCall() throws {
        let ctx = try ZMQContext()
        let s = try ZMQSocket(ctx, .dealer)
        do {
            try s.connect("nonsense://x")
            Issue.record("expected an error")
        } catch let e as ZMQError {
            #expect(e.description.contains("zmq_connect(nonsense://x)"), "\(e)")
        }
    }
}
