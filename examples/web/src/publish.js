// <moq-publish> (@moq/publish): the camera (video only), encoded with WebCodecs, published.
import "@moq/publish/element";
import { target } from "./target.js";

const { url, name } = target();
const element = document.querySelector("moq-publish");
element.setAttribute("url", url);
element.setAttribute("name", name);
element.setAttribute("source", "camera"); // asks for the camera (getUserMedia)
window.moqElement = element;
