// Runs before each unit test file (vitest setupFiles): the temp dirs of a test go when it ends.
import { afterEach } from "vitest";
import { removeTempDirs } from "./helpers/repo";

afterEach(removeTempDirs);
