import Foundation
import Testing
@testable import Images

@Suite("image decoding")
struct ImagesTests {
    /// A smooth picture with some edges: gradients and a bright square.
    func picture(_ w: Int, _ h: Int) -> RGBImage {
        var p = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0 ..< h {
            for x in 0 ..< w {
                let i = (y * w + x) * 3
                p[i] = UInt8(x * 255 / max(1, w - 1)); p[i + 1] = UInt8(y * 255 / max(1, h - 1)); p[i + 2] = 128
                if x > w / 3 && x < 2 * w / 3 && y > h / 3 && y < 2 * h / 3 { p[i] = 250; p[i + 1] = 250; p[i + 2] = 250 }
            }
        }
        return RGBImage(width: w, height: h, pixels: p)
    }

    func psnr(_ a: RGBImage, _ b: RGBImage) -> Double {
        let mse = zip(a.pixels, b.pixels).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) } / Double(a.pixels.count)
        return mse == 0 ? .infinity : 10 * log10(255 * 255 / mse)
    }

    /// PNG round-trips exactly; JPEG at quality 95 within 35 dB PSNR; both are recognised by
    /// their first bytes, whatever the file is called.
    @Test func jpegAndPngRoundTrip() throws {
        let img = picture(37, 23)  // odd sizes: no multiple of the 8×8 JPEG blocks
        let png = try ImageEncoder.png(img), jpg = try ImageEncoder.jpeg(img, quality: 95)
        #expect(ImageDecoder.sniff(png) == .png && ImageDecoder.sniff(jpg) == .jpeg)
        #expect(try ImageDecoder.decode(png, file: "a.jpg") == img)
        let back = try ImageDecoder.decode(jpg, file: "a.png")
        #expect(back.width == 37 && back.height == 23 && psnr(back, img) > 35, "PSNR \(psnr(back, img))")
    }

    /// Damaged files are errors that name the file and the call, never a crash: empty,
    /// not an image, truncated at many lengths, and hundreds of random byte flips.
    @Test func damagedFilesAreErrorsNotCrashes() throws {
        let img = picture(40, 30)
        #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode([], file: "empty.jpg") }
        do { _ = try ImageDecoder.decode(Array("hello".utf8), file: "x.jpg") } catch let e as ImageDecodeError {
            #expect(e.file == "x.jpg" && e.call == "sniff")
        }
        for encoded in [try ImageEncoder.png(img), try ImageEncoder.jpeg(img, quality: 80)] {
            for cut in stride(from: 8, to: encoded.count, by: max(1, encoded.count / 40)) {
                do { _ = try ImageDecoder.decode(Array(encoded.prefix(cut)), file: "cut") } catch is ImageDecodeError {}
            }
            var state: UInt64 = 12345
            func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
            var decoded = 0, refused = 0
            for _ in 0 ..< 300 {
                var bad = encoded
                for _ in 0 ..< 1 + next() % 4 { bad[8 + next() % (bad.count - 8)] ^= UInt8(1 << (next() % 8)) }
                do { let d = try ImageDecoder.decode(bad, file: "flip"); #expect(d.pixels.count == d.width * d.height * 3); decoded += 1 }
                catch is ImageDecodeError { refused += 1 }
            }
            #expect(decoded + refused == 300)
        }
    }

    /// A header that claims a huge picture is refused before any pixel is allocated.
    @Test func hugePicturesAreRefusedFromTheHeader() throws {
        var png = try ImageEncoder.png(picture(4, 4))
        // IHDR's width and height (big-endian, bytes 16..<24): 100000 × 100000.
        for (k, b) in [0x00, 0x01, 0x86, 0xA0, 0x00, 0x01, 0x86, 0xA0].enumerated() { png[16 + k] = UInt8(b) }
        // The chunk's CRC-32 over type and data (bytes 12..<29), so libpng reads the header.
        var crc: UInt32 = 0xFFFF_FFFF
        for b in png[12 ..< 29] {
            crc ^= UInt32(b)
            for _ in 0 ..< 8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc ^= 0xFFFF_FFFF
        for k in 0 ..< 4 { png[29 + k] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * k)) }
        do {
            _ = try ImageDecoder.decode(png, file: "huge.png")
            Issue.record("a 10^10-pixel header was decoded")
        } catch let e as ImageDecodeError {
            #expect(e.call == "png_image_begin_read_from_memory" && e.message.contains("100000×100000 pixels"), "\(e)")
        }
    }
}

extension ImagesTests {
    /// A FIFO, a directory or a missing file named like a picture is an error that says
    /// what it is (before: "open failed: Success"); a real file reads whole.
    @Test func onlyRegularFilesAreRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("svite-images-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: "\(dir)/d.png", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(mkfifo("\(dir)/f.jpg", 0o644) == 0)
        let png = try ImageEncoder.png(picture(9, 5))
        FileManager.default.createFile(atPath: "\(dir)/ok.png", contents: Data(png))
        for (name, words) in [("f.jpg", "a FIFO, not a regular file"), ("d.png", "a directory"), ("none.png", "No such file")] {
            #expect {
                _ = try ImageDecoder.read(file: "\(dir)/\(name)")
            } throws: { error in
                "\(error)".contains(words) && "\(error)".contains(name)
            }
        }
        #expect(try ImageDecoder.read(file: "\(dir)/ok.png") == png)
    }
}
