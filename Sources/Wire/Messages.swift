import Foundation

/// worker → coordinator: who is asking to join.
public struct JoinMessage: Codable, Sendable, Equatable {
    public var name: String
    public var host: String
    public var pid: Int32
    public var threads: Int
    public init(name: String, host: String, pid: Int32, threads: Int) {
        self.name = name; self.host = host; self.pid = pid; self.threads = threads
    }
}

/// coordinator → worker: the run it joined, its rank and the config; the weights follow.
public struct WelcomeInfo: Codable, Sendable, Equatable {
    public var rank: Int
    public var runID: UInt64
    public var config: String
    public var heartbeatSeconds: Double
    public var gradientCodec: ValueCodec
    public init(rank: Int, runID: UInt64, config: String, heartbeatSeconds: Double, gradientCodec: ValueCodec) {
        self.rank = rank; self.runID = runID; self.config = config
        self.heartbeatSeconds = heartbeatSeconds; self.gradientCodec = gradientCodec
    }
}

/// A worker's share of a step: positions [start, start + count) of epoch `epoch`'s
/// permutation.
public struct Assignment: Sendable, Equatable {
    public var epoch: UInt32
    public var start: UInt32
    public var count: UInt32
    public init(epoch: UInt32, start: UInt32, count: UInt32) { self.epoch = epoch; self.start = start; self.count = count }
}

/// The summary numbers that travel with a gradient.
public struct GradientSummary: Sendable, Equatable {
    public var images: UInt32
    public var lossSum: Double
    public var correct: UInt32
    public init(images: UInt32, lossSum: Double, correct: UInt32) { self.images = images; self.lossSum = lossSum; self.correct = correct }
}

/// Payload encoders and decoders. Values are always checked against the count the
/// receiver expects (its layout), so a frame cannot make it write out of bounds.
public enum Payload {
    static let json: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    public static func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
        (try? Array(json.encode(value))) ?? []
    }

    public static func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: some Collection<UInt8>) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw WireError.malformedPayload("\(T.self): \(error)")
        }
    }

    // welcome: blob(JSON WelcomeInfo), u32 count, fp32 weights

    public static func welcome(_ info: WelcomeInfo, params: UnsafePointer<Float>, count: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 4 * count + 1024)
        w.blob(encodeJSON(info))
        w.u32(UInt32(count))
        w.floats(params, count: count)
        return w.bytes
    }

    /// The info, and the reader positioned at the weights (count first).
    public static func welcomeInfo(_ payload: [UInt8]) throws -> (WelcomeInfo, ByteReader) {
        var r = ByteReader(payload)
        let info = try decodeJSON(WelcomeInfo.self, try r.blob("welcome info"))
        return (info, r)
    }

    public static func values(_ r: inout ByteReader, codec: ValueCodec = .fp32, into out: UnsafeMutablePointer<Float>, count: Int) throws {
        let n = Int(try r.u32("value count"))
        guard n == count else { throw WireError.malformedPayload("\(n) values, this layout has \(count)") }
        try codec.decode(&r, into: out, count: count)
        try r.expectEnd("values")
    }

    // params: u32 epoch, u32 start, u32 count, u8 hasValues, [u32 n, fp32 values]

    public static func params(_ a: Assignment, values: UnsafePointer<Float>?, count: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 16 + (values == nil ? 0 : 4 * count))
        w.u32(a.epoch); w.u32(a.start); w.u32(a.count)
        if let values {
            w.u8(1)
            w.u32(UInt32(count))
            w.floats(values, count: count)
        } else {
            w.u8(0)
        }
        return w.bytes
    }

    /// The assignment; the values (if any) are written into `into`.
    public static func decodeParams(_ payload: [UInt8], into out: UnsafeMutablePointer<Float>, count: Int) throws -> (Assignment, hadValues: Bool) {
        var r = ByteReader(payload)
        let a = Assignment(epoch: try r.u32("epoch"), start: try r.u32("start"), count: try r.u32("count"))
        let has = try r.u8("has values")
        switch has {
        case 0: try r.expectEnd("params"); return (a, false)
        case 1: try values(&r, into: out, count: count); return (a, true)
        default: throw WireError.malformedPayload("params flag \(has)")
        }
    }

    // grads: u32 images, f64 loss sum, u32 correct, u8 codec, u32 n, values

    public static func grads(_ s: GradientSummary, codec: ValueCodec, values: UnsafePointer<Float>, count: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 24 + codec.bytesPerValue * count)
        w.u32(s.images); w.f64(s.lossSum); w.u32(s.correct)
        w.u8(codec.rawValue)
        w.u32(UInt32(count))
        codec.encode(values, count: count, into: &w)
        return w.bytes
    }

    public static func decodeGrads(_ payload: [UInt8], into out: UnsafeMutablePointer<Float>, count: Int) throws -> GradientSummary {
        var r = ByteReader(payload)
        let s = GradientSummary(images: try r.u32("images"), lossSum: try r.f64("loss sum"), correct: try r.u32("correct"))
        let c = try r.u8("codec")
        guard let codec = ValueCodec(rawValue: c) else { throw WireError.malformedPayload("value codec \(c)") }
        guard s.lossSum.isFinite, s.correct <= s.images else { throw WireError.malformedPayload("summary \(s)") }
        try values(&r, codec: codec, into: out, count: count)
        return s
    }

    // leave, stop, reject: a reason string

    public static func reason(_ text: String) -> [UInt8] {
        var w = ByteWriter()
        w.string(text)
        return w.bytes
    }

    public static func decodeReason(_ payload: [UInt8]) throws -> String {
        var r = ByteReader(payload)
        let s = try r.string("reason")
        try r.expectEnd("reason")
        return s
    }
}
