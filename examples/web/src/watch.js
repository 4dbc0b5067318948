// <moq-watch> (@moq/watch): waits for the broadcast's announcement, subscribes, decodes with
// WebCodecs and draws onto its <canvas>.
import "@moq/watch/element";
import { target } from "./target.js";

const { url, name } = target();
const element = document.querySelector("moq-watch");
element.setAttribute("url", url);
element.setAttribute("name", name);
window.moqElement = element;
