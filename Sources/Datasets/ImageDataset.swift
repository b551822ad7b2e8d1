import Foundation

/// Images as bytes, (count, C, H, W) row-major, and their labels. Kept as UInt8 (a
/// quarter of the memory of floats); batches are normalised as they are assembled. An
/// image folder's pictures stay on disk (`files`, `pixels` empty) and are decoded as
/// batches need them (`FolderImageLoader`).
public struct ImageDataset: Sendable {
    public let name: String
    public let count: Int
    public let channels: Int
    public let height: Int
    public let width: Int
    public let classes: Int
    public let pixels: [UInt8]
    public let labels: [Int32]
    /// An image folder's files (nil: the pixels are in memory).
    public let files: ImageFolderFiles?
    /// The classes' names in label order, when the data set names them itself.
    public let classNames: [String]?

    public var imageBytes: Int { channels * height * width }

    /// An image folder's split: `files.size`-square pictures of `files.channels`.
    public init(name: String, files: ImageFolderFiles, labels: [Int32], classNames: [String]) {
        precondition(files.paths.count == labels.count, "ImageDataset: label count")
        self.name = name; count = labels.count; channels = files.channels; height = files.size; width = files.size
        classes = classNames.count; pixels = []; self.labels = labels; self.files = files; self.classNames = classNames
    }

    public init(name: String, count: Int, channels: Int, height: Int, width: Int, classes: Int,
                pixels: [UInt8], labels: [Int32]) {
        precondition(pixels.count == count * channels * height * width, "ImageDataset: pixel count")
        precondition(labels.count == count, "ImageDataset: label count")
        self.name = name; self.count = count; self.channels = channels; self.height = height
        self.width = width; self.classes = classes; self.pixels = pixels; self.labels = labels
        files = nil; classNames = nil
    }

    /// The first `n` images (all when n is 0 or at least count; of an image folder, n
    /// spread over the classes).
    public func prefix(_ n: Int) -> ImageDataset {
        guard n > 0 && n < count else { return self }
        if var f = files {
            // A folder lists its files class by class: n spread evenly over them keeps
            // every class (the first n would be the first classes only).
            let picks = (0 ..< n).map { $0 * count / n }
            f.paths = picks.map { f.paths[$0] }
            return ImageDataset(name: name, files: f, labels: picks.map { labels[$0] }, classNames: classNames ?? [])
        }
        return ImageDataset(name: name, count: n, channels: channels, height: height, width: width,
                            classes: classes, pixels: Array(pixels[0 ..< n * imageBytes]),
                            labels: Array(labels[0 ..< n]))
    }

    /// Images per class, for a quick sanity line in the log.
    public var classCounts: [Int] {
        var c = [Int](repeating: 0, count: classes)
        for l in labels { c[Int(l)] += 1 }
        return c
    }
}

public enum Split: String, Sendable, CaseIterable {
    case train, test
}

/// Readers for the data sets svite knows.
public enum DatasetReader {
    /// Images and labels from a pair of IDX files (MNIST layout: images (N, H, W) bytes,
    /// labels (N) bytes below `classes`).
    public static func idx(images imagesPath: String, labels labelsPath: String, name: String,
                           classes: Int = 10) throws -> ImageDataset {
        let images = try IDXArray.parse(try Gzip.readAll(imagesPath), file: imagesPath)
        let labels = try IDXArray.parse(try Gzip.readAll(labelsPath), file: labelsPath)
        guard images.dimensions.count == 3 else {
            throw DataError(file: imagesPath, problem: "expected images with 3 dimensions (count, height, width), found \(images.dimensions)")
        }
        guard labels.dimensions.count == 1 else {
            throw DataError(file: labelsPath, problem: "expected labels with 1 dimension, found \(labels.dimensions)")
        }
        guard images.dimensions[0] == labels.dimensions[0] else {
            throw DataError(file: labelsPath, problem: "\(labels.dimensions[0]) labels for \(images.dimensions[0]) images in \(imagesPath)")
        }
        var out = [Int32](repeating: 0, count: labels.bytes.count)
        for (i, b) in labels.bytes.enumerated() {
            guard Int(b) < classes else {
                throw DataError(file: labelsPath, problem: "label \(b) at index \(i) is not below \(classes) classes")
            }
            out[i] = Int32(b)
        }
        return ImageDataset(name: name, count: images.dimensions[0], channels: 1,
                            height: images.dimensions[1], width: images.dimensions[2],
                            classes: classes, pixels: images.bytes, labels: out)
    }

    /// CIFAR-10 binary batches: records of one label byte and 3×32×32 pixel bytes
    /// (channel-planar, as the model wants them).
    public static func cifar10(files: [String], name: String = "cifar10") throws -> ImageDataset {
        let record = 1 + 3 * 32 * 32
        var pixels: [UInt8] = [], labels: [Int32] = []
        for file in files {
            let bytes = try Gzip.readAll(file)
            guard !bytes.isEmpty, bytes.count % record == 0 else {
                throw DataError(file: file, problem: "\(bytes.count) bytes is not a whole number of CIFAR-10 records (\(record) bytes each); the file is truncated or not a CIFAR-10 binary batch")
            }
            pixels.reserveCapacity(pixels.count + bytes.count)
            for r in 0 ..< bytes.count / record {
                let label = bytes[r * record]
                guard label < 10 else {
                    throw DataError(file: file, problem: "record \(r) has label \(label), not below 10 classes")
                }
                labels.append(Int32(label))
                pixels.append(contentsOf: bytes[(r * record + 1) ..< ((r + 1) * record)])
            }
        }
        return ImageDataset(name: name, count: labels.count, channels: 3, height: 32, width: 32,
                            classes: 10, pixels: pixels, labels: labels)
    }
}
