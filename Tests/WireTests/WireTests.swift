import Core
import Foundation
import Model
import Sparsity
import Steps
import Testing
import Compression
import TestSupport
@testable import Wire

let limits = FrameLimits(maxRawBytes: 1 << 20, runID: 42, layoutHash: 0xABCD)

func header(_ t: MessageType, step: UInt64 = 7) -> FrameHeader {
    FrameHeader(type: t, runID: 42, step: step, maskVersion: 3, layoutHash: 0xABCD)
}

/// Re-signs a (mutated) frame's header so the check under test is the one that fires.
func resign(_ b: [UInt8]) -> [UInt8] {
    var out = b
    let crc = Checksum.crc32(out[0 ..< 52])
    withUnsafeBytes(of: crc.littleEndian) { for i in 0 ..< 4 { out[52 + i] = $0[i] } }
    return out
}

func resignPayload(_ b: [UInt8]) -> [UInt8] {
    var out = b
    let crc = Checksum.crc32(out[56...])
    withUnsafeBytes(of: crc.littleEndian) { for i in 0 ..< 4 { out[48 + i] = $0[i] } }
    return resign(out)
}

func expectWire(_ want: WireError, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(want)", sourceLocation: sourceLocation)
    } catch let e as WireError {
        #expect(e == want, "\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

@Suite("wire")
struct WireTests {
    @Test(arguments: [false, true])
    func gradsRoundTrip(compress: Bool) throws {
        var rng = Rand(s: 1)
        let n = 1000
        let values = (0 ..< n).map { i in i % 3 == 0 ? 0 : rng.float() }
        let s = GradientSummary(images: 64, lossSum: 123.5, correct: 40)
        let frame = Frame(header: header(.grads), payload: Payload.grads(s, codec: .fp32, values: values, count: n))
        let bytes = frame.encoded(compress: compress)
        let back = try Frame.decode(bytes, limits: limits)
        #expect(back.header.type == .grads && back.header.step == 7 && back.header.maskVersion == 3)
        #expect(back.header.compressed == (compress && bytes.count < 56 + frame.payload.count))
        var out = [Float](repeating: 0, count: n)
        #expect(try Payload.decodeGrads(back.payload, into: &out, count: n).summary == s)
        #expect(out == values)
        // The receiver's count is what counts.
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(back.payload, into: &out, count: n - 1) }
    }

    @Test func otherMessagesRoundTrip() throws {
        let params: [Float] = [1, -2, 3.5]
        var out = [Float](repeating: 0, count: 3)
        let a = Assignment(epoch: 2, start: 256, count: 64)
        let p = try Payload.decodeParams(Payload.params(StepFrame(order: StepOrder(), shares: .one(a)), values: params, count: 3), into: &out, count: 3)
        #expect(p.0.share(rank: 5) == a && p.hadValues && out == params)
        let q = try Payload.decodeParams(Payload.params(StepFrame(order: StepOrder(), shares: .one(a))), into: &out, count: 3)
        #expect(q.0.share(rank: 0) == a && !q.hadValues)

        let info = WelcomeInfo(rank: 1, runID: 42, config: "name: x\n", heartbeatSeconds: 1, gradientCodec: .bf16)
        var (back, r) = try Payload.welcomeInfo(Payload.welcome(info, params: params, count: 3))
        #expect(back == info)
        out = [0, 0, 0]
        try Payload.values(&r, into: &out, count: 3)
        #expect(out == params)

        let join = JoinMessage(name: "w", host: "h", pid: 9, threads: 2)
        #expect(try Payload.decodeJSON(JoinMessage.self, Payload.encodeJSON(join)) == join)
        #expect(try Payload.decodeReason(Payload.reason("bye ✓")) == "bye ✓")
    }

    @Test func bf16GradsHalveTheBytes() throws {
        let n = 4096
        var rng = Rand(s: 2)
        let values = (0 ..< n).map { _ in rng.float() }
        let p32 = Payload.grads(GradientSummary(images: 1, lossSum: 0, correct: 0), codec: .fp32, values: values, count: n)
        let p16 = Payload.grads(GradientSummary(images: 1, lossSum: 0, correct: 0), codec: .bf16, values: values, count: n)
        #expect(p16.count == p32.count - 2 * n)
        var out = [Float](repeating: 0, count: n)
        _ = try Payload.decodeGrads(p16, into: &out, count: n)
        for i in 0 ..< n { #expect(abs(out[i] - values[i]) <= abs(values[i]) / 256) }
    }

    @Test func everyBadFrameIsNamed() throws {
        let values: [Float] = (0 ..< 256).map { Float($0 % 4) }
        let good = Frame(header: header(.grads), payload: Payload.grads(GradientSummary(images: 1, lossSum: 1, correct: 1),
                                                                        codec: .fp32, values: values, count: 256)).encoded()
        #expect(good.count < 56 + 1000, "zeros and repeats compress")
        _ = try Frame.decode(good, limits: limits)

        expectWire(.truncated(have: 10, need: 56)) { _ = try Frame.decode(Array(good.prefix(10)), limits: limits) }
        var b = good; b[0] = 0x58
        expectWire(.badMagic(0x4554_5658)) { _ = try Frame.decode(b, limits: limits) }
        b = good; b[4] = 9
        expectWire(.unsupportedVersion(9)) { _ = try Frame.decode(b, limits: limits) }
        b = good; b[20] ^= 1
        expectWire(.badHeaderChecksum) { _ = try Frame.decode(b, limits: limits) }
        b = good; b[6] = 99
        expectWire(.unknownMessageType(99)) { _ = try Frame.decode(resign(b), limits: limits) }
        expectWire(.payloadSizeMismatch(declared: good.count - 56, actual: good.count - 57)) {
            _ = try Frame.decode(Array(good.dropLast()), limits: limits)
        }
        expectWire(.overSizeBound(declared: 1052, bound: 1000)) {
            _ = try Frame.decode(good, limits: FrameLimits(maxRawBytes: 1000))
        }
        b = good; b[60] ^= 0x10
        expectWire(.badPayloadChecksum) { _ = try Frame.decode(b, limits: limits) }
        expectWire(.wrongRun(expected: 43, found: 42)) { _ = try Frame.decode(good, limits: FrameLimits(maxRawBytes: 1 << 20, runID: 43)) }
        expectWire(.wrongLayout(expected: 1, found: 0xABCD)) { _ = try Frame.decode(good, limits: FrameLimits(maxRawBytes: 1 << 20, layoutHash: 1)) }
        // Corrupt LZ4 with a correct checksum: the decoder refuses it.
        b = good; for i in 56 ..< b.count { b[i] = 0xFF }
        #expect(throws: WireError.self) { _ = try Frame.decode(resignPayload(b), limits: limits) }
        // An LZ4 stream that decodes to fewer bytes than declared.
        b = good; b[40] = b[40] &+ 1
        #expect(throws: WireError.self) { _ = try Frame.decode(resign(b), limits: limits) }
        // peek reads a good header without the payload, and refuses a bad header.
        b = good; b[60] ^= 0x10
        #expect(Frame.peek(b) == (try Frame.decode(good, limits: limits)).header)
        b = good; b[20] ^= 1
        #expect(Frame.peek(b) == nil && Frame.peek(Array(good.prefix(55))) == nil)
    }

    /// Random and mutated frames never crash the decoder; whatever it accepts decodes as
    /// a payload or is refused with a WireError (the short version of `svite fuzz`).
    @Test func fuzzedFramesAreRefusedNotFatal() {
        let report = FrameFuzzer.run(frames: 20_000, seed: 99)
        #expect(report.otherErrors.isEmpty, "\(report.otherErrors)")
        #expect(report.frames == 20_000 && report.accepted + report.refused == 20_000)
        #expect(report.refused > 15_000 && report.accepted > 0, "refused \(report.refused), accepted \(report.accepted)")
    }

    @Test func lz4GainsOnZerosNotOnFloats() {
        var rng = Rand(s: 3)
        let floats = (0 ..< 10_000).map { _ in rng.float() }
        var w = ByteWriter(); w.floats(floats, count: floats.count)
        #expect(LZ4.compress(w.bytes) == nil || LZ4.compress(w.bytes)!.count > w.bytes.count * 9 / 10)
        let zeros = [UInt8](repeating: 0, count: 40_000)
        #expect(LZ4.compress(zeros)!.count < 1000)
    }
}

@Suite("wire: sparse messages")
struct SparseWireTests {
    @Test func maskUpdatesCandidatesAndPackedValuesRoundTrip() throws {
        let change = MaskUpdate.change(version: 5, layers: [.init(off: [1, 7], on: [3, 9]), .init(off: [], on: [])])
        let request = StepRequest.growCandidates(multiplier: 2, perLayer: [2, 0])
        let selector = SelectorSchedule(temperature: 0.5, noiseScale: 0.25)
        let values: [Float] = [1, 2, 3]
        let one = StepFrame.Shares.one(Assignment(epoch: 1, start: 2, count: 3))
        let p = Payload.params(StepFrame(order: StepOrder(request: request, selector: selector), shares: one, mask: change), values: values, count: 3)
        let (h, values0) = try Payload.decodeParams(p, maxLayers: 2, maxIndices: 10)
        #expect(h.mask == change && h.order.request == request && h.order.selector == selector)
        var r = try #require(values0)
        var out = [Float](repeating: 0, count: 3)
        try Payload.values(&r, into: &out, count: 3)
        #expect(out == values)
        // An index beyond the layer, or more layers than the model has, is refused.
        #expect(throws: WireError.self) { _ = try Payload.decodeParams(p, maxLayers: 1, maxIndices: 10) }
        #expect(throws: WireError.self) { _ = try Payload.decodeParams(p, maxLayers: 2, maxIndices: 8) }
        let bitmap = MaskUpdate.bitmap(version: 2, bits: [0xFF, 0x01])
        let q = Payload.params(StepFrame(order: StepOrder(), shares: one, mask: bitmap))
        let plain = try Payload.decodeParams(q, maxLayers: 2, maxIndices: 8)
        #expect(plain.0.mask == bitmap && plain.0.order == StepOrder() && plain.values == nil)
        // A unit-score request carries its seed; a selector with τ ≤ 0 or NaN is refused
        // (the worker would trap on it).
        let scoring = Payload.params(StepFrame(order: StepOrder(request: .unitScores(seed: 0xDEAD_BEEF_0123)), shares: one))
        #expect(try Payload.decodeParams(scoring, maxLayers: 0, maxIndices: 0).0.order.request == .unitScores(seed: 0xDEAD_BEEF_0123))
        for tau in [Float(0), -1, .nan, .infinity] {
            let bad = Payload.params(StepFrame(order: StepOrder(selector: SelectorSchedule(temperature: tau)), shares: one))
            #expect(throws: WireError.self) { _ = try Payload.decodeParams(bad, maxLayers: 0, maxIndices: 0) }
        }

        // The compression of a step travels with it; a density outside (0, 1] is refused.
        let dense = Payload.params(StepFrame(order: StepOrder(), shares: one))
        #expect(try Payload.decodeParams(dense, maxLayers: 0, maxIndices: 0).0.order.compression == .dense)
        for c in [GradientCompression.topK(density: 0.01), .estimate(density: 0.5)] {
            let topK = Payload.params(StepFrame(order: StepOrder(compression: c), shares: one))
            #expect(try Payload.decodeParams(topK, maxLayers: 0, maxIndices: 0).0.order.compression == c)
        }
        for d in [0.0, -0.5, 1.5, .nan] {
            let bad = Payload.params(StepFrame(order: StepOrder(compression: .topK(density: d)), shares: one))
            #expect(throws: WireError.self) { _ = try Payload.decodeParams(bad, maxLayers: 0, maxIndices: 0) }
        }
        // A field out of order, or one this version does not know, is refused.
        var unknown = dense
        unknown += [9, 0, 0, 0, 0]
        #expect(throws: WireError.self) { _ = try Payload.decodeParams(unknown, maxLayers: 0, maxIndices: 0) }
        var twice = dense
        twice += Array(dense.prefix(17))
        #expect(throws: WireError.self) { _ = try Payload.decodeParams(twice, maxLayers: 0, maxIndices: 0) }

        let cands = [GrowCandidates(indices: [0, 4], values: [0.5, -1]), GrowCandidates(indices: [], values: [])]
        let g = Payload.grads(GradientSummary(images: 3, lossSum: 1, correct: 2), codec: .fp32, values: values, count: 3, reply: .growCandidates(cands))
        let d = try Payload.decodeGrads(g, into: &out, count: 3, expecting: .growCandidates(layerSizes: [5, 5]))
        #expect(d.summary.images == 3 && d.reply == .growCandidates(cands))
        // Unit scores (S2ViTE, SSP) travel instead of candidates; the count must be the model's.
        let u = Payload.grads(GradientSummary(images: 3, lossSum: 1, correct: 2), codec: .fp32, values: values, count: 3,
                              reply: .unitScores([0.5, -2, 3]))
        #expect(try Payload.decodeGrads(u, into: &out, count: 3, expecting: .unitScores(count: 3)).reply == .unitScores([0.5, -2, 3]))
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(u, into: &out, count: 3, expecting: .unitScores(count: 4)) }
        // A reply that was not asked for, or not the one asked for, is refused.
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(u, into: &out, count: 3) }
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(g, into: &out, count: 3, expecting: .unitScores(count: 3)) }
        let none = Payload.grads(GradientSummary(images: 3, lossSum: 1, correct: 2), codec: .fp32, values: values, count: 3)
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(none, into: &out, count: 3, expecting: .growCandidates(layerSizes: [5, 5])) }
        #expect(try Payload.decodeGrads(none, into: &out, count: 3).reply == StepReply.none)
        let nan = Payload.grads(GradientSummary(images: 3, lossSum: 1, correct: 2), codec: .fp32, values: values, count: 3,
                                reply: .unitScores([0.5, .nan, 3]))
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(nan, into: &out, count: 3, expecting: .unitScores(count: 3)) }
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(g, into: &out, count: 3, expecting: .growCandidates(layerSizes: [4, 5])) }
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(g, into: &out, count: 3, expecting: .growCandidates(layerSizes: [5])) }
    }
}
