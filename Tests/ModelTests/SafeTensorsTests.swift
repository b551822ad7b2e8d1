import Core
import Foundation
import Testing
import Kernels
@testable import Model

@Suite("safetensors")
struct SafeTensorsTests {
    let model = ViTModel(config: tinyConfig)

    func tempPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("svite-st-\(UUID().uuidString)-\(name)").path
    }

    func written() throws -> (path: String, params: FloatBuffer) {
        let params = randomParameters(model, seed: 11)
        let path = tempPath("model.safetensors")
        try SafeTensors.write(params: params, layout: model.layout, to: path, metadata: ["format": "pt"])
        return (path, params)
    }

    @Test func roundTrip() throws {
        let (path, params) = try written()
        defer { unlink(path) }
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata["format"] == "pt")
        #expect(Set(file.entries.keys) == Set(model.layout.tensors.map(\.name)))
        #expect(file.entries["blocks.1.attn.qkv.weight"]?.shape == [36, 12])
        let loaded = FloatBuffer(count: model.layout.count)
        try file.load(into: loaded, layout: model.layout)
        #expect(loaded.array == params.array)
        // The header length is a multiple of 8 so the data is aligned, as the reference writer does.
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(n % 8 == 0)
    }

    @Test func readsAFileWrittenByHand() throws {
        // A minimal file built byte by byte from the format's definition.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}"#
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        for v: Float in [1.5, -2] { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        let f = try SafeTensorsFile(data: data)
        #expect(try f.floats("a") == [1.5, -2])
        #expect(f.metadata == ["k": "v"])
    }

    func expectError(_ data: Data, _ check: (SafeTensorsError) -> Bool) {
        do {
            let f = try SafeTensorsFile(data: data, path: "bad.safetensors")
            try f.load(into: FloatBuffer(count: model.layout.count), layout: model.layout)
            Issue.record("expected an error")
        } catch let e as SafeTensorsError {
            #expect(check(e), "\(e)")
            #expect(e.description.contains("bad.safetensors"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    /// Re-encodes the model with one header entry edited.
    func withHeader(_ edit: (inout [String: Any]) -> Void) throws -> Data {
        let (path, _) = try written()
        defer { unlink(path) }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = Int(data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + n)) as! [String: Any]
        edit(&header)
        let json = try JSONSerialization.data(withJSONObject: header)
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(data.subdata(in: 8 + n ..< data.count))
        return out
    }

    @Test func truncatedFiles() throws {
        let (path, _) = try written()
        defer { unlink(path) }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        expectError(data.prefix(5)) { if case .truncated = $0 { return true }; return false }
        expectError(data.prefix(40)) { if case .truncated = $0 { return true }; return false }
        expectError(data.prefix(data.count - 4)) {
            if case .truncated(_, let reason) = $0 { return reason.contains("head.bias") || reason.contains("ends at byte") }
            return false
        }
    }

    @Test func badJSON() {
        var data = Data()
        let junk = Array("{not json".utf8)
        withUnsafeBytes(of: UInt64(junk.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: junk)
        expectError(data) { if case .badHeader(_, let r) = $0 { return r.contains("JSON") }; return false }
        var huge = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { huge.append(contentsOf: $0) }
        expectError(huge) { if case .badHeader(_, let r) = $0 { return r.contains("exceeds") }; return false }
        // Another kind of file is named as such, not as a bad header length.
        expectError(Data("name: typo\nmodel:\n  dim: 96\n".utf8)) { if case .notSafeTensors(_, let start) = $0 { return start.hasPrefix("\"name: typo model:") }; return false }
        #expect(SafeTensorsError.notSafeTensors(path: "x.yaml", start: "\"a…\"").description.contains("not a safetensors file"))
    }

    @Test func wrongShapeIsNamed() throws {
        // Same byte count, different shape: caught by the shape check, not the size check.
        let data = try withHeader { h in
            var e = h["blocks.0.attn.proj.weight"] as! [String: Any]
            e["shape"] = [6, 24]
            h["blocks.0.attn.proj.weight"] = e
        }
        expectError(data) {
            if case .wrongShape(_, let t, let found, let expected) = $0 {
                return t == "blocks.0.attn.proj.weight" && found == [6, 24] && expected == [12, 12]
            }
            return false
        }
        let inconsistent = try withHeader { h in
            var e = h["norm.bias"] as! [String: Any]
            e["shape"] = [13]
            h["norm.bias"] = e
        }
        expectError(inconsistent) { if case .badTensorEntry(_, "norm.bias", _) = $0 { return true }; return false }
    }

    @Test func wrongDtypeIsNamed() throws {
        let data = try withHeader { h in
            var e = h["head.weight"] as! [String: Any]
            e["dtype"] = "I32"
            h["head.weight"] = e
        }
        expectError(data) {
            if case .wrongDtype(_, "head.weight", "I32", "F32") = $0 { return true }
            return false
        }
    }

    @Test func missingAndExtraTensorsAreListed() throws {
        let data = try withHeader { h in
            h["token_selector.fc.weight"] = h["norm.bias"]
            h["some.extra"] = h["norm.bias"]
            h.removeValue(forKey: "blocks.1.mlp.fc2.bias")
        }
        expectError(data) {
            if case .mismatchedTensors(_, let missing, let unexpected) = $0 {
                return missing == ["blocks.1.mlp.fc2.bias"] && unexpected == ["some.extra", "token_selector.fc.weight"]
            }
            return false
        }
        // Non-strict loading ignores extras but never a missing tensor.
        let f = try SafeTensorsFile(data: try withHeader { h in h["some.extra"] = h["norm.bias"] })
        let ignored = try f.load(into: FloatBuffer(count: model.layout.count), layout: model.layout, strict: false)
        #expect(ignored == ["some.extra"])
    }

    @Test func nothingIsWrittenIntoParametersWhenLoadingFails() throws {
        let data = try withHeader { h in
            var e = h["head.bias"] as! [String: Any]
            e["dtype"] = "I32"
            h["head.bias"] = e
        }
        let target = randomParameters(model, seed: 99)
        let before = target.array
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(data: data).load(into: target, layout: self.model.layout) }
        #expect(target.array == before)
    }

    @Test func unreadablePath() {
        #expect(throws: SafeTensorsError.unreadable(path: "/nonexistent/x.safetensors", reason: "no such file")) {
            try SafeTensorsFile(path: "/nonexistent/x.safetensors")
        }
    }
}
