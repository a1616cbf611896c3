import Testing

@testable import AdminTool

@Suite struct ArgumentsTests {
    @Test func optionsAnywhereAndPositionalsInOrder() {
        let a = Arguments(["--password=x", "user-add", "-C=/etc/c", "a@b", "--receive_only"])
        #expect(a.positional == ["user-add", "a@b"])
        #expect(a.options == ["--password": "x", "-C": "/etc/c", "--receive_only": ""])
    }

    @Test func configDirectoryPrecedence() {
        #expect(Arguments([]).configDirectory == "/etc/chasquid")
        #expect(Arguments(["--config_dir=/a"]).configDirectory == "/a")
        #expect(Arguments(["--config_dir=/a", "-C=/b"]).configDirectory == "/b")
        #expect(Arguments(["--config_dir=/a", "-C=/b", "--configdir=/c"]).configDirectory == "/c")
    }

    @Test func separateValuesForTheConfigDirectory() {
        let a = Arguments(["-C", "/etc/x", "check-userdb", "d"])
        #expect(a.configDirectory == "/etc/x")
        #expect(a.positional == ["check-userdb", "d"])
        #expect(Arguments(["--config_dir", "/y", "print-config"]).configDirectory == "/y")
    }

    @Test func namesAreLiteral() {
        // `-password` is not `--password`.
        let a = Arguments(["-password=x"])
        #expect(a.options["--password"] == nil)
        #expect(a.options["-password"] == "x")
    }

    @Test func valuesMayContainEquals() {
        #expect(Arguments(["--password=a=b"]).options["--password"] == "a=b")
    }
}
