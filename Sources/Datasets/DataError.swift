/// A data file that cannot be used: names the file, says what is wrong and how to get a
/// good one.
public struct DataError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var problem: String
    public var remedy: String

    public init(file: String, problem: String, remedy: String = "") {
        self.file = file; self.problem = problem; self.remedy = remedy
    }

    public var description: String {
        remedy.isEmpty ? "\(file): \(problem)" : "\(file): \(problem). \(remedy)"
    }
}
