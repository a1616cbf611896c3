import AdminTool

#if canImport(Glibc)
import Glibc
#endif

exit(AdminTool(arguments: Array(CommandLine.arguments.dropFirst())).run())
