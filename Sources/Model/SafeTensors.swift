import Core
import Foundation

/// What can go wrong reading or writing a safetensors file; every case names the file
/// and, where there is one, the tensor.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case truncated(path: String, reason: String)
    case badHeader(path: String, reason: String)
    case notSafeTensors(path: String, start: String)
    case badTensorEntry(path: String, tensor: String, reason: String)
    case wrongDtype(path: String, tensor: String, found: String, expected: String)
    case wrongShape(path: String, tensor: String, found: [Int], expected: [Int])
    case mismatchedTensors(path: String, missing: [String], unexpected: [String])

    public var description: String {
        switch self {
        case let .unreadable(p, r): return "\(p): cannot read: \(r)"
        case let .truncated(p, r): return "\(p): file is truncated: \(r)"
        case let .badHeader(p, r): return "\(p): bad safetensors header: \(r)"
        case let .notSafeTensors(p, start):
            return "\(p): not a safetensors file (it starts with \(start)); give a run directory, a checkpoint "
                + "(RUN/checkpoints/step-N.safetensors) or a file from `svite export`"
        case let .badTensorEntry(p, t, r): return "\(p): tensor '\(t)': \(r)"
        case let .wrongDtype(p, t, f, e): return "\(p): tensor '\(t)' has dtype \(f), expected \(e)"
        case let .wrongShape(p, t, f, e): return "\(p): tensor '\(t)' has shape \(f), expected \(e)"
        case let .mismatchedTensors(p, missing, unexpected):
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing \(missing.count): \(missing.joined(separator: ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected \(unexpected.count): \(unexpected.joined(separator: ", "))") }
            return "\(p): tensors do not match the model: " + parts.joined(separator: "; ")
        }
    }
}

/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON
/// header mapping each tensor name to {dtype, shape, data_offsets} (plus an optional
/// "__metadata__" of strings), then the raw little-endian data.
public struct SafeTensorsFile {
    public struct Entry: Equatable, Sendable {
        public var dtype: String
        public var shape: [Int]
        /// Byte range within the data section.
        public var begin: Int
        public var end: Int
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    let data: Data
    let dataStart: Int

    /// CRC-32 of the tensor bytes (everything after the header).
    public var dataChecksum: UInt32 {
        data.withUnsafeBytes { raw in Checksum.crc32(UnsafeRawBufferPointer(rebasing: raw[dataStart...])) }
    }

    /// Header lengths above this are rejected before allocating (the format's own limit).
    public static let maxHeaderBytes = 100 * 1024 * 1024

    public static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
        "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafeTensorsError.unreadable(path: path, reason: FileManager.default.fileExists(atPath: path)
                ? "permission denied or not a regular file" : "no such file")
        }
        try self.init(data: data, path: path)
    }

    public init(data: Data, path: String = "<memory>") throws {
        self.path = path
        self.data = data
        guard data.count >= 8 else {
            throw SafeTensorsError.truncated(path: path, reason: "\(data.count) bytes, the 8-byte header length is incomplete")
        }
        // The JSON header begins with '{' (the format requires it): anything else is some
        // other file (a config, an image), said as such rather than as a bad header length.
        if data.count > 8 && data[data.startIndex + 8] != UInt8(ascii: "{") {
            let head = String(decoding: data.prefix(24), as: UTF8.self).unicodeScalars
                .map { $0.properties.isWhitespace || $0.value < 32 || $0.value == 0xFFFD ? " " : String($0) }.joined()
            throw SafeTensorsError.notSafeTensors(path: path, start: "\"\(head.trimmingCharacters(in: .whitespaces))…\"")
        }
        let headerLength = data.withUnsafeBytes { raw in UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw SafeTensorsError.badHeader(path: path, reason: "declared header length \(headerLength) exceeds \(Self.maxHeaderBytes) bytes")
        }
        guard 8 + Int(headerLength) <= data.count else {
            throw SafeTensorsError.truncated(path: path, reason: "header declares \(headerLength) bytes but only \(data.count - 8) follow")
        }
        dataStart = 8 + Int(headerLength)
        let headerData = data.subdata(in: 8 ..< dataStart)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw SafeTensorsError.badHeader(path: path, reason: "header is not valid JSON (\(error.localizedDescription))")
        }
        guard let root = json as? [String: Any] else {
            throw SafeTensorsError.badHeader(path: path, reason: "header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        let dataBytes = data.count - dataStart
        for (name, value) in root {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw SafeTensorsError.badHeader(path: path, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw SafeTensorsError.badHeader(path: path, reason: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard let obj = value as? [String: Any],
                  let dtype = obj["dtype"] as? String,
                  let shapeAny = obj["shape"] as? [Any],
                  let offsAny = obj["data_offsets"] as? [Any] else {
                throw SafeTensorsError.badTensorEntry(path: path, tensor: name, reason: "needs dtype, shape and data_offsets")
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offs = offsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw SafeTensorsError.badTensorEntry(path: path, tensor: name, reason: "shape must be a list of non-negative integers")
            }
            guard offs.count == 2, offs[0] >= 0, offs[1] >= offs[0] else {
                throw SafeTensorsError.badTensorEntry(path: path, tensor: name, reason: "data_offsets must be [begin, end] with begin ≤ end")
            }
            guard offs[1] <= dataBytes else {
                throw SafeTensorsError.truncated(path: path, reason: "tensor '\(name)' ends at byte \(offs[1]) of the data but the file holds \(dataBytes)")
            }
            guard let size = Self.dtypeSizes[dtype] else {
                throw SafeTensorsError.badTensorEntry(path: path, tensor: name, reason: "unknown dtype '\(dtype)'")
            }
            let elements = shape.reduce(1, *)
            guard elements * size == offs[1] - offs[0] else {
                throw SafeTensorsError.badTensorEntry(path: path, tensor: name,
                    reason: "shape \(shape) of \(dtype) needs \(elements * size) bytes but data_offsets span \(offs[1] - offs[0])")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: offs[0], end: offs[1])
        }
        self.entries = entries
        self.metadata = metadata
    }

    /// The values of an F32 tensor.
    public func floats(_ name: String) throws -> [Float] {
        guard let e = entries[name] else {
            throw SafeTensorsError.mismatchedTensors(path: path, missing: [name], unexpected: [])
        }
        guard e.dtype == "F32" else {
            throw SafeTensorsError.wrongDtype(path: path, tensor: name, found: e.dtype, expected: "F32")
        }
        var out = [Float](repeating: 0, count: (e.end - e.begin) / 4)
        out.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(dataStart + e.begin) ..< (dataStart + e.end)]))
            }
        }
        #if _endian(big)
        for i in out.indices { out[i] = Float(bitPattern: UInt32(littleEndian: out[i].bitPattern)) }
        #endif
        return out
    }

    /// Copies every tensor of `layout` into `params`, checking names, dtypes and shapes
    /// first, so nothing is written unless everything fits. With `strict`, tensors the
    /// layout does not know are an error; otherwise their names are returned.
    @discardableResult
    public func load(into params: FloatBuffer, layout: ParameterLayout, strict: Bool = true,
                     ignoringPrefixes: [String] = []) throws -> [String] {
        precondition(params.count == layout.count)
        let missing = layout.tensors.map(\.name).filter { entries[$0] == nil }
        let unexpected = entries.keys.filter { layout[$0] == nil }.sorted()
        let reportable = unexpected.filter { name in !ignoringPrefixes.contains { name.hasPrefix($0) } }
        if !missing.isEmpty || (strict && !reportable.isEmpty) {
            throw SafeTensorsError.mismatchedTensors(path: path, missing: missing, unexpected: strict ? reportable : [])
        }
        for t in layout.tensors {
            let e = entries[t.name]!
            guard e.dtype == "F32" else {
                throw SafeTensorsError.wrongDtype(path: path, tensor: t.name, found: e.dtype, expected: "F32")
            }
            guard e.shape == t.shape else {
                throw SafeTensorsError.wrongShape(path: path, tensor: t.name, found: e.shape, expected: t.shape)
            }
        }
        for t in layout.tensors {
            let values = try floats(t.name)
            let dst = params.view(t)
            values.withUnsafeBufferPointer { dst.baseAddress!.update(from: $0.baseAddress!, count: t.count) }
        }
        return unexpected
    }
}

/// Writing safetensors files.
public enum SafeTensors {
    /// Serialises named F32 tensors (in the given order) with optional string metadata.
    public static func encode(tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
                              metadata: [String: String] = [:]) throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.values.count, "safetensors: \(t.name) shape \(t.shape) vs \(t.values.count) values")
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for t in tensors {
            #if _endian(big)
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            #else
            out.append(UnsafeBufferPointer(start: t.values.baseAddress, count: t.values.count))
            #endif
        }
        return out
    }

    /// Writes every tensor of `layout` from `params` to `path` atomically.
    public static func write(params: FloatBuffer, layout: ParameterLayout, to path: String,
                             metadata: [String: String] = [:]) throws {
        let tensors = layout.tensors.map { t in
            (name: t.name, shape: t.shape, values: UnsafeBufferPointer(params.view(t)))
        }
        let data = try encode(tensors: tensors, metadata: metadata)
        try AtomicFile.write(path, data: data)
    }
}
