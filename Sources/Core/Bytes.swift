import Foundation

/// Little-endian writer for payloads.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func f64(_ v: Double) { u64(v.bitPattern) }
    public mutating func f32(_ v: Float) { u32(v.bitPattern) }
    public mutating func raw(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }

    /// A length-prefixed (u32) byte string.
    public mutating func blob(_ b: some Collection<UInt8>) { u32(UInt32(b.count)); raw(b) }
    public mutating func string(_ s: String) { blob(Array(s.utf8)) }

    /// LEB128 unsigned varint.
    public mutating func varint(_ v: UInt64) {
        var x = v
        while x >= 0x80 { bytes.append(UInt8(x & 0x7F) | 0x80); x >>= 7 }
        bytes.append(UInt8(x))
    }

    /// Floats as little-endian fp32.
    public mutating func floats(_ p: UnsafePointer<Float>, count: Int) {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: 4 * count))
        bytes.withUnsafeMutableBytes { dst in
            #if _endian(little)
            UnsafeMutableRawPointer(dst.baseAddress! + start).copyMemory(from: p, byteCount: 4 * count)
            #else
            for i in 0 ..< count { (dst.baseAddress! + start + 4 * i).storeBytes(of: p[i].bitPattern.littleEndian, as: UInt32.self) }
            #endif
        }
    }
}

/// Bounds-checked little-endian reader: every read past the end throws, so a malformed
/// payload is an error and never a crash.
public struct ByteReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    /// Where this reader's bytes end (a tagged field's reader ends with its body).
    public private(set) var end: Int

    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset; end = bytes.count }

    public var remaining: Int { end - offset }

    mutating func take(_ n: Int, _ what: String) throws -> Range<Int> {
        guard n >= 0, n <= remaining else {
            throw WireError.malformedPayload("\(what): needs \(n) bytes, \(remaining) left")
        }
        defer { offset += n }
        return offset ..< offset + n
    }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let r = try take(MemoryLayout<T>.size, what)
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: r.lowerBound, as: T.self)) }
    }

    public mutating func u8(_ what: String = "u8") throws -> UInt8 { try fixed(UInt8.self, what) }
    public mutating func u16(_ what: String = "u16") throws -> UInt16 { try fixed(UInt16.self, what) }
    public mutating func u32(_ what: String = "u32") throws -> UInt32 { try fixed(UInt32.self, what) }
    public mutating func u64(_ what: String = "u64") throws -> UInt64 { try fixed(UInt64.self, what) }
    public mutating func f64(_ what: String = "f64") throws -> Double { Double(bitPattern: try u64(what)) }
    public mutating func f32(_ what: String = "f32") throws -> Float { Float(bitPattern: try u32(what)) }

    public mutating func raw(_ n: Int, _ what: String = "bytes") throws -> ArraySlice<UInt8> {
        bytes[try take(n, what)]
    }

    public mutating func blob(_ what: String = "blob") throws -> ArraySlice<UInt8> {
        try raw(Int(try u32("\(what) length")), what)
    }

    public mutating func string(_ what: String = "string") throws -> String {
        let b = try blob(what)
        guard let s = String(validating: b, as: UTF8.self) else {
            throw WireError.malformedPayload("\(what): not UTF-8")
        }
        return s
    }

    public mutating func varint(_ what: String = "varint") throws -> UInt64 {
        var result: UInt64 = 0, shift: UInt64 = 0
        while true {
            guard shift < 64 else { throw WireError.malformedPayload("\(what): varint longer than 64 bits") }
            let b = try u8(what)
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// `count` fp32 values into `out`.
    public mutating func floats(into out: UnsafeMutablePointer<Float>, count: Int, _ what: String = "floats") throws {
        let r = try take(4 * count, what)
        bytes.withUnsafeBytes { src in
            #if _endian(little)
            UnsafeMutableRawPointer(out).copyMemory(from: src.baseAddress! + r.lowerBound, byteCount: 4 * count)
            #else
            for i in 0 ..< count { out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: r.lowerBound + 4 * i, as: UInt32.self))) }
            #endif
        }
    }

    public func expectEnd(_ what: String) throws {
        if remaining != 0 { throw WireError.malformedPayload("\(what): \(remaining) unexpected trailing bytes") }
    }
}

// Tagged fields: u8 tag, u32 length, the body. A message of tagged fields names what it
// carries instead of spending a flag bit on each, and a reader checks that each body is
// read to its end.

extension ByteWriter {
    /// Writes one tagged field whose body `body` writes.
    public mutating func field(_ tag: UInt8, _ body: (inout ByteWriter) -> Void) {
        u8(tag)
        let at = bytes.count
        u32(0)
        body(&self)
        let length = UInt32(bytes.count - at - 4)
        withUnsafeBytes(of: length.littleEndian) { b in for i in 0 ..< 4 { bytes[at + i] = b[i] } }
    }
}

extension ByteReader {
    /// Reads tagged fields in increasing tag order until the end of the bytes, or until
    /// the field tagged `last` (whose body is then left for the caller, the reader at its
    /// start). `read` reads one body and must read all of it; a tag out of order, a body
    /// read short or past its length, or a tag `read` does not know (it throws) is malformed.
    public mutating func fields(_ what: String, last: UInt8? = nil, _ read: (UInt8, inout ByteReader) throws -> Void) throws {
        var previous = -1
        while remaining > 0 {
            let tag = try u8("\(what) field tag")
            guard Int(tag) > previous else { throw WireError.malformedPayload("\(what): field \(tag) after field \(previous)") }
            previous = Int(tag)
            let length = Int(try u32("\(what) field \(tag) length"))
            guard length <= remaining else { throw WireError.malformedPayload("\(what) field \(tag): \(length) bytes, \(remaining) left") }
            if tag == last { return }
            // The body's reader shares the bytes (no copy) and ends where the body does.
            var body = self
            body.end = offset + length
            try read(tag, &body)
            try body.expectEnd("\(what) field \(tag)")
            offset = body.end
        }
    }
}

extension ByteReader {
    /// `count` fp32 values as an array.
    public mutating func floatArray(_ count: Int, _ what: String = "floats") throws -> [Float] {
        guard count >= 0, 4 * count <= remaining else { throw WireError.malformedPayload("\(what): needs \(4 * count) bytes, \(remaining) left") }
        var v = [Float](repeating: 0, count: count)
        try v.withUnsafeMutableBufferPointer { p in if count > 0 { try floats(into: p.baseAddress!, count: count, what) } }
        return v
    }
}
