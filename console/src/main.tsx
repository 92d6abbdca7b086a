// The console's entry point: the styles and the app, rendered into #app.
import "./console.css";
import { render } from "preact";
import { App } from "./app";

render(<App />, document.getElementById("app")!);
