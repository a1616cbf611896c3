import Testing

@testable import GoFlags

@Suite struct GoFlagsTests {
    func make() -> GoFlags {
        GoFlags([
            .init("config_dir", .string, "/etc/chasquid", "dir"),
            .init("version", .bool, "false", "version"),
            .init("v", .int, "0", "verbosity"),
        ])
    }

    @Test func defaults() throws {
        var f = make()
        try f.parse([])
        #expect(f.string("config_dir") == "/etc/chasquid")
        #expect(!f.bool("version"))
        #expect(f.int("v") == 0)
        #expect(!f.isSet("config_dir"))
    }

    @Test(arguments: [
        ["-config_dir=/x"], ["--config_dir=/x"], ["-config_dir", "/x"], ["--config_dir", "/x"],
    ])
    func valueForms(args: [String]) throws {
        var f = make()
        try f.parse(args)
        #expect(f.string("config_dir") == "/x")
        #expect(f.isSet("config_dir"))
    }

    @Test func booleansAndInts() throws {
        var f = make()
        try f.parse(["-version", "-v=1"])
        #expect(f.bool("version") && f.int("v") == 1)
        var g = make()
        try g.parse(["--version=false", "-v", "2"])
        #expect(!g.bool("version") && g.int("v") == 2)
    }

    @Test func parsingStopsAtTheFirstArgument() throws {
        var f = make()
        try f.parse(["-v=1", "rest", "-version"])
        #expect(f.arguments == ["rest", "-version"])
        #expect(!f.bool("version"))
        var g = make()
        try g.parse(["--", "-version"])
        #expect(g.arguments == ["-version"])
    }

    @Test(arguments: [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["-config_dir"], "flag needs an argument: -config_dir"),
        (["-v=x"], "invalid value \"x\" for flag -v: parse error"),
        (["-version=maybe"], "invalid boolean value \"maybe\" for -version"),
        (["---v"], "bad flag syntax: ---v"),
    ])
    func errors(args: [String], message: String) {
        var f = make()
        #expect(throws: GoFlags.Failure(description: message)) { try f.parse(args) }
    }
}
